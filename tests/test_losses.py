"""The answer-only loss: the same value and gradients as the model's own loss, fewer logits."""

import pytest
import torch

from aimmerging.batching import IGNORE_INDEX, Encoder
from aimmerging.data.formats import Example
from aimmerging.losses import batch_loss, labelled_positions
from aimmerging.models import add_lora, load_backbone

EXAMPLES = [Example("a", "Classify the topic of the sentence: the match ended in a draw\nAnswer:", "sports"),
            Example("b", "Classify: rates rose\nAnswer:", "business news"),
            Example("c", "Classify the topic: a new planet was found by the telescope team\nAnswer:",
                    "science")]


def lora(name: str):
    torch.manual_seed(0)
    backbone = load_backbone(name)
    net = add_lora(backbone, r=4, alpha=8, dropout=0.0)
    for n, p in net.named_parameters():   # non-zero B, so that the adapter changes the loss
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    return backbone, net


def loss_and_grads(net, fn):
    net.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}


def assert_same_loss_and_grads(net, reference, candidate):
    """``candidate()`` gives ``reference()``'s loss and every trainable gradient, up to rounding."""
    ref, ref_grads = loss_and_grads(net, reference)
    got, got_grads = loss_and_grads(net, candidate)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert ref_grads.keys() == got_grads.keys()
    for n in ref_grads:
        torch.testing.assert_close(got_grads[n], ref_grads[n], rtol=1e-4, atol=1e-6)


def test_labelled_positions_are_those_before_each_label():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 5, 6, IGNORE_INDEX],
                           [IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    assert labelled_positions(labels).tolist() == [0, 1, 2]
    assert labelled_positions(torch.full((2, 4), IGNORE_INDEX)).numel() == 0


def test_causal_answer_only_loss_matches_the_models_loss_and_gradients():
    backbone, net = lora("tiny-llama")
    enc = Encoder(backbone.tokenizer, is_seq2seq=False, max_input_tokens=64)
    batch = enc.train_batch(EXAMPLES)
    assert_same_loss_and_grads(net, lambda: net(**batch).loss,
                               lambda: batch_loss(net, batch, is_seq2seq=False))


def test_causal_answer_only_loss_asks_only_for_labelled_logits():
    backbone, net = lora("tiny-llama")
    enc = Encoder(backbone.tokenizer, is_seq2seq=False, max_input_tokens=64)
    batch = enc.train_batch(EXAMPLES)
    seen = {}
    head = net.get_base_model().get_output_embeddings()

    def record(module, args, output):
        seen["shape"] = tuple(output.shape)

    hook = head.register_forward_hook(record)
    try:
        batch_loss(net, batch, is_seq2seq=False)
    finally:
        hook.remove()
    n_keep = labelled_positions(batch["labels"]).numel()
    assert seen["shape"][:2] == (len(EXAMPLES), n_keep)
    assert n_keep < batch["input_ids"].shape[1] - 1


@pytest.mark.parametrize("answer_only", [True, False])
def test_seq2seq_and_opt_out_use_the_models_own_loss(answer_only):
    backbone, net = lora("tiny-t5")
    enc = Encoder(backbone.tokenizer, is_seq2seq=True, max_input_tokens=64)
    batch = enc.train_batch(EXAMPLES)
    torch.testing.assert_close(batch_loss(net, batch, True, answer_only), net(**batch).loss)


def test_cache_only_and_last_position_logits_keep_integers_for_kv_shared_models():
    from aimmerging.losses import last_logits_only, no_logits

    _, net = lora("tiny-llama")
    cpu = torch.device("cpu")
    assert no_logits(net, cpu).numel() == 0                         # no position projected
    assert last_logits_only(net, cpu)["logits_to_keep"].tolist() == [-1]
    # Gemma 4's KV-shared layers run only the kept positions for an integer logits_to_keep
    net.get_base_model().config.num_kv_shared_layers = 1
    assert no_logits(net, cpu) == 1
    assert last_logits_only(net, cpu) == {}
