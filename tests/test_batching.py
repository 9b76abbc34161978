"""Batches: label masking, EOS, padding sides, middle truncation; batched generation."""

import pytest
import torch

from aimmerging.batching import IGNORE_INDEX, Encoder, cut_middle
from aimmerging.data.formats import Example
from aimmerging.models import build_byte_tokenizer, load_backbone


def test_cut_middle_keeps_head_and_tail():
    ids = list(range(10))
    assert cut_middle(ids, 4) == [0, 1, 8, 9]
    assert cut_middle(ids, 5) == [0, 1, 2, 8, 9]
    assert cut_middle(ids, 10) == ids
    assert cut_middle(ids, 1) == [0]


@pytest.fixture(scope="module")
def tok():
    return build_byte_tokenizer()


def test_causal_batch_masks_prompt_and_appends_eos(tok):
    enc = Encoder(tok, is_seq2seq=False, max_input_tokens=64)
    ex = [Example("a", "Question one\nAnswer:", "yes"), Example("b", "Q2\nAnswer:", "no")]
    batch = enc.train_batch(ex)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape
    # first example: prompt masked, answer " yes" + EOS supervised, right padding
    n_prompt = len(tok("Question one\nAnswer:", add_special_tokens=False)["input_ids"])
    answer = tok(" yes", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert (labels[0, :n_prompt] == IGNORE_INDEX).all()
    assert labels[0, n_prompt:n_prompt + len(answer)].tolist() == answer
    # second example is shorter: padding at the end is ignored and unattended
    length = int(mask[1].sum())
    assert (labels[1, length:] == IGNORE_INDEX).all()
    assert (ids[1, length:] == tok.pad_token_id).all()


def test_long_input_keeps_instruction_and_answer_cue(tok):
    enc = Encoder(tok, is_seq2seq=False, max_input_tokens=40)
    text = "INSTRUCTION: pick one.\n" + "x" * 500 + "\nAnswer:"
    prompt = enc.encode_prompts([text])[0]
    assert len(prompt) <= 40
    decoded = tok.decode(prompt)
    assert decoded.startswith("INSTRUCTION")
    assert decoded.endswith("Answer:")


def test_seq2seq_labels_padded_with_ignore_index(tok):
    enc = Encoder(tok, is_seq2seq=True, max_input_tokens=64)
    batch = enc.train_batch([Example("a", "in", "a long answer"), Example("b", "in2", "b")])
    labels = batch["labels"]
    assert labels[0, -1].item() == tok.eos_token_id
    assert labels[1, 2:].eq(IGNORE_INDEX).all()       # "b" + EOS, then padding


def test_generation_batch_is_left_padded_for_causal(tok):
    enc = Encoder(tok, is_seq2seq=False)
    batch = enc.generation_batch([[5, 6, 7], [8]])
    assert batch["input_ids"][1].tolist() == [tok.pad_token_id, tok.pad_token_id, 8]
    assert batch["attention_mask"][1].tolist() == [0, 0, 1]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-t5"])
def test_batched_generation_matches_one_at_a_time(name):
    from aimmerging.evaluation import generate

    bb = load_backbone(name)
    enc = Encoder(bb.tokenizer, bb.is_seq2seq, max_input_tokens=48)
    inputs = ["short\nAnswer:", "a much longer prompt with many more bytes in it\nAnswer:",
              "mid length prompt\nAnswer:"]
    torch.manual_seed(0)
    batched = generate(bb.model, enc, inputs, batch_size=3, max_new_tokens=5)
    single = [generate(bb.model, enc, [x], batch_size=1, max_new_tokens=5)[0] for x in inputs]
    assert batched == single
    assert len(batched) == 3


def test_shared_prefix_length_leaves_one_token_per_prompt():
    from aimmerging.prefix import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 5]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2      # at most the shortest - 1
    assert shared_prefix_length([[7, 8]]) == 1
    assert shared_prefix_length([[1], [2]]) == 0
    assert shared_prefix_length([]) == 0


def test_prefix_batch_puts_padding_between_prefix_and_rest():
    from aimmerging.evaluation import _prefix_batch

    enc = Encoder(build_byte_tokenizer(), is_seq2seq=False)
    pad = enc.pad_id
    batch = _prefix_batch(enc, [[1, 2, 3, 4, 5], [1, 2, 6]], p_len=2)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [1, 2, pad, pad, 6]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 1]]


def test_shared_prefix_generation_matches_unshared_and_embeds_fewer_tokens():
    from aimmerging.evaluation import generate

    bb = load_backbone("tiny-llama")
    torch.manual_seed(1)
    with torch.no_grad():   # larger random weights: varied, prompt-dependent predictions
        for p in bb.model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    enc = Encoder(bb.tokenizer, False, max_input_tokens=256)
    definition = "Definition: pick the topic of the sentence from the list. "
    inputs = [definition + s + "\nAnswer:" for s in
              ["goal!", "the bank raised its rates again", "a comet was seen", "new phone out"]]
    embedded = []
    hook = bb.model.get_input_embeddings().register_forward_hook(
        lambda m, args, out: embedded.append(args[0].numel()))
    try:
        shared = generate(bb.model, enc, inputs, batch_size=3, max_new_tokens=6)
        n_shared = sum(embedded)
        embedded.clear()
        plain = generate(bb.model, enc, inputs, batch_size=3, max_new_tokens=6, share_prefix=False)
        n_plain = sum(embedded)
    finally:
        hook.remove()
    single = [generate(bb.model, enc, [x], batch_size=1, max_new_tokens=6, share_prefix=False)[0]
              for x in inputs]
    assert shared == plain == single
    assert len(set(shared)) == len(inputs)
    # the shared prefix (BOS + definition) is embedded once, not once per prompt
    assert n_plain - n_shared == (len(inputs) - 1) * (len(definition) + len(enc.prefix))


def test_generation_projects_only_the_last_position_from_a_contiguous_copy():
    from aimmerging.evaluation import generate

    bb = load_backbone("tiny-llama")
    torch.manual_seed(2)
    with torch.no_grad():
        for p in bb.model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    enc = Encoder(bb.tokenizer, False, max_input_tokens=64)
    inputs = ["Definition: topic. goal!\nAnswer:", "Definition: topic. a comet was seen\nAnswer:"]
    seen = []
    hook = bb.model.get_output_embeddings().register_forward_hook(
        lambda m, args, out: seen.append((tuple(args[0].shape), args[0].is_contiguous())))
    try:
        ours = generate(bb.model, enc, inputs, batch_size=2, max_new_tokens=4, share_prefix=False)
    finally:
        hook.remove()
    assert seen and all(shape[:2] == (2, 1) and contiguous for shape, contiguous in seen)
    # the same predictions as transformers' own generate (logits_to_keep=1), one prompt at a time
    for text, ids in zip(ours, enc.encode_prompts(inputs)):
        out = bb.model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False,
                                pad_token_id=enc.pad_id, eos_token_id=enc.eos_id)
        assert text == bb.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()
