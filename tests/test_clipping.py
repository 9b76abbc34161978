"""fp16 clipping with two optimizers over the same parameters (the main and the rehearsal AdamW)."""

import pytest
import torch
from accelerate import Accelerator

from aimmerging.loop import clip_gradients


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerate keeps one state per process and refuses an fp16 Accelerator after an earlier
    test's full-precision one (and the other way round): each test here starts and ends anew."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _fp16_accelerator_with_two_optimizers():
    """A CPU Accelerator given a real GradScaler, as Accelerate sets one up for fp16 on a GPU."""
    acc = Accelerator(cpu=True, mixed_precision="fp16")
    acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    acc.native_amp = True
    p = torch.nn.Parameter(torch.zeros(3))
    main, rehearsal = acc.prepare(torch.optim.AdamW([p], lr=1e-3), torch.optim.AdamW([p], lr=1e-3))
    loss = (p * torch.tensor([1.0, 2.0, 3.0])).sum()
    acc.scaler.scale(loss).backward()
    return acc, p, main, rehearsal


def test_accelerate_unscales_shared_gradients_once_per_optimizer():
    # why clip_gradients exists: Accelerate's clip_grad_norm_ unscales every prepared
    # optimizer, so a gradient two optimizers share is divided by the scale twice
    acc, p, _, _ = _fp16_accelerator_with_two_optimizers()
    acc.clip_grad_norm_([p], 1e9)
    assert torch.allclose(p.grad, torch.tensor([1.0, 2.0, 3.0]) / 2.0 ** 16)


@pytest.mark.parametrize("max_norm, expected", [(1e9, [1.0, 2.0, 3.0]),
                                                (1.0, [1 / 14 ** 0.5, 2 / 14 ** 0.5, 3 / 14 ** 0.5])])
def test_clip_gradients_unscales_only_the_stepping_optimizer(max_norm, expected):
    acc, p, main, rehearsal = _fp16_accelerator_with_two_optimizers()
    clip_gradients(acc, main, [p], max_norm)
    torch.testing.assert_close(p.grad, torch.tensor(expected), atol=1e-6, rtol=1e-5)
    main.step()                     # GradScaler.step knows main was unscaled: no second division
    assert torch.all(p.detach() < 0)   # AdamW moved every element by about lr against the gradient
    torch.testing.assert_close(p.detach(), torch.full((3,), -1e-3), atol=1e-5, rtol=0)


def test_clip_gradients_without_a_scaler_clips_as_accelerate_does():
    acc = Accelerator(cpu=True)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = acc.prepare(torch.optim.SGD([p], lr=1.0))
    (p * torch.tensor([3.0, 4.0])).sum().backward()
    clip_gradients(acc, opt, [p], 1.0)
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8]))
