"""The history-loss pass's precision (method.history_precision)."""

import pytest
import torch

import aimmerging.monitoring as monitoring
from aimmerging.batching import Encoder
from aimmerging.losses import batch_loss
from aimmerging.monitoring import history_autocast, history_dtype

from test_losses import lora
from test_prefix import MIXED


def test_explicit_settings_and_a_bad_one():
    _, net = lora("tiny-llama")
    assert history_dtype("model", net) is None
    assert history_dtype("bfloat16", net) is torch.bfloat16
    with pytest.raises(ValueError, match="history_precision"):
        history_dtype("float16", net)


def test_auto_needs_a_large_float32_model_where_bfloat16_measured_faster(monkeypatch):
    _, net = lora("tiny-llama")
    asked = []
    monkeypatch.setattr(monitoring, "bfloat16_pays", lambda device, shape: asked.append(shape) or True)
    assert history_dtype("auto", net) is None                  # too small to gain
    monkeypatch.setattr(monitoring, "sharing_pays", lambda model: True)
    assert history_dtype("auto", net) is torch.bfloat16
    assert asked == [(256, 64, 128)]                           # the probe: the model's shapes
    monkeypatch.setattr(monitoring, "bfloat16_pays", lambda device, shape: False)
    assert history_dtype("auto", net) is None                  # emulated, or measured slower
    monkeypatch.setattr(monitoring, "bfloat16_pays", lambda device, shape: True)
    net.get_base_model().to(torch.bfloat16)
    assert history_dtype("auto", net) is None                  # already low precision


def test_bfloat16_pass_is_close_to_the_float32_loss_but_not_equal():
    backbone, net = lora("tiny-llama")
    net.eval()
    batch = Encoder(backbone.tokenizer, is_seq2seq=False, max_input_tokens=256).train_batch(MIXED)
    with torch.no_grad():
        exact = batch_loss(net, batch, is_seq2seq=False)
        with history_autocast("model", net):
            same = batch_loss(net, batch, is_seq2seq=False)
        with history_autocast("bfloat16", net):
            low = batch_loss(net, batch, is_seq2seq=False)
    assert same.item() == exact.item()
    assert low.item() != exact.item()                          # the autocast did run
    assert low.item() == pytest.approx(exact.item(), rel=0.02)
    assert low.dtype == torch.float32                          # the loss itself stays float32


def test_set_training_sets_the_flags_train_would_set():
    from aimmerging.monitoring import set_training

    _, net = lora("tiny-llama")
    net.train()
    set_training(net, False)
    assert not any(m.training for m in net.modules())
    set_training(net, True)
    assert all(m.training for m in net.modules())
    net.eval()
    expected = [m.training for m in net.modules()]
    net.train()
    set_training(net, False)
    assert [m.training for m in net.modules()] == expected


def test_set_training_lets_a_module_that_overrides_train_run_it():
    from aimmerging.monitoring import set_training

    seen = []

    class Own(torch.nn.Linear):
        def train(self, mode=True):
            seen.append(mode)
            return super().train(mode)

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), Own(2, 2))
    set_training(model, False)
    assert seen == [False] and not any(m.training for m in model.modules())
    set_training(model, True)
    assert seen == [False, True] and all(m.training for m in model.modules())
