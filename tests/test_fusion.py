"""Tests of aimmerging.fusion on a small real PEFT LoRA model (SPEC.md
"Rehearsal-based knowledge fusion"; paper eq. 5-7)."""

from __future__ import annotations

import pytest
import torch

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from aimmerging.fusion import (  # noqa: E402
    copy_into_,
    fuse_,
    fuse_elementwise_,
    l1_change,
    snapshot,
    trainable_parameters,
)


def tiny_lora_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised 2-layer Llama (hidden 32, 4 heads, vocab 128) with LoRA
    r=4 on q_proj and v_proj; the LoRA B weights (zero at init) are randomised."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    base = transformers.LlamaForCausalLM(config)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = peft.get_peft_model(base, lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    return model.to(dtype)


def perturb_(model: torch.nn.Module, scale: float = 0.05, seed: int = 1) -> None:
    """Stand-in for training: add noise to the trainable parameters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in trainable_parameters(model):
            p.add_((torch.randn(p.shape, generator=g) * scale).to(p.dtype))


def frozen_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


def test_trainable_parameters_are_the_lora_weights():
    model = tiny_lora_model()
    names = [n for n, _ in trainable_parameters(model)]
    # 2 layers x {q_proj, v_proj} x {lora_A, lora_B}
    assert len(names) == 8
    assert all("lora_A" in n or "lora_B" in n for n in names)
    assert all(p.requires_grad for _, p in trainable_parameters(model))


def test_snapshot_is_float32_detached_copy():
    model = tiny_lora_model()
    snap = snapshot(model)
    params = dict(trainable_parameters(model))
    assert set(snap) == set(params)
    for name, t in snap.items():
        assert t.dtype == torch.float32
        assert t.shape == params[name].shape
        assert not t.requires_grad
        assert t.device == params[name].device
        assert t.data_ptr() != params[name].data_ptr()
    perturb_(model)
    first = next(iter(snap))
    assert not torch.equal(snap[first], params[first].detach())


def test_l1_change_matches_hand_computation():
    model = tiny_lora_model()
    anchor = snapshot(model)
    assert l1_change(model, anchor) == 0.0
    perturb_(model)
    expected = sum(
        (p.detach().double() - anchor[n].double()).abs().sum().item()
        for n, p in trainable_parameters(model)
    )
    assert l1_change(model, anchor) == pytest.approx(expected, rel=1e-5)
    # one hand-set element: shift a single entry by +0.5 from the anchor everywhere else
    copy_into_(model, anchor)
    name, p = trainable_parameters(model)[0]
    with torch.no_grad():
        p[0, 0] += 0.5
    assert l1_change(model, anchor) == pytest.approx(0.5, abs=1e-6)


def test_fuse_formula_and_frozen_untouched():
    model = tiny_lora_model()
    frozen = frozen_state(model)
    anchor = snapshot(model)              # theta_anchor
    perturb_(model, seed=1)
    theta_new = snapshot(model)           # theta_j
    perturb_(model, seed=2)
    theta_m = snapshot(model)             # theta_M (after "rehearsal")
    a_new, a_past = 0.6, 0.4
    fuse_(model, anchor, theta_new, a_new, a_past)
    for name, p in trainable_parameters(model):
        tau_new = theta_new[name] - anchor[name]
        tau_past = theta_m[name] - theta_new[name]
        expected = anchor[name] + a_new * tau_new + a_past * tau_past
        torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p.detach(), frozen[name]), name
    # inputs not modified
    assert all(not t.requires_grad for t in anchor.values())


def test_fuse_special_weights():
    model = tiny_lora_model()
    anchor = snapshot(model)
    perturb_(model, seed=1)
    theta_new = snapshot(model)
    perturb_(model, seed=2)
    theta_m = snapshot(model)
    # alpha = (1, 1): anchor + tau_new + tau_past = theta_M
    fuse_(model, anchor, theta_new, 1.0, 1.0)
    for name, p in trainable_parameters(model):
        torch.testing.assert_close(p.detach(), theta_m[name], atol=1e-6, rtol=0)
    # alpha = (1, 0): back to theta_new (rehearsal discarded)
    copy_into_(model, theta_m)
    fuse_(model, anchor, theta_new, 1.0, 0.0)
    for name, p in trainable_parameters(model):
        torch.testing.assert_close(p.detach(), theta_new[name], atol=1e-6, rtol=0)
    # alpha = (0, 0): back to the anchor
    copy_into_(model, theta_m)
    fuse_(model, anchor, theta_new, 0.0, 0.0)
    for name, p in trainable_parameters(model):
        torch.testing.assert_close(p.detach(), anchor[name], atol=1e-6, rtol=0)


def test_fuse_at_one_zero_is_exact():
    # values where anchor + 1 * (theta_j - anchor) rounds in float32: the no-op merge must
    # still leave theta_j bit for bit (SPEC.md fusion step 5)
    model = tiny_lora_model()
    gen = torch.Generator().manual_seed(3)
    anchor = {k: torch.randn(v.shape, generator=gen) * 1e3 for k, v in snapshot(model).items()}
    copy_into_(model, {k: torch.randn(v.shape, generator=gen) * 1e-3 for k, v in anchor.items()})
    theta_new = snapshot(model)
    rounded = sum(int((a + (theta_new[k] - a) != theta_new[k]).sum()) for k, a in anchor.items())
    assert rounded > 0                    # the float32 formula would move these elements
    perturb_(model, seed=2)               # theta_M after a rehearsal, discarded at (1, 0)
    fuse_(model, anchor, theta_new, 1.0, 0.0)
    for name, p in trainable_parameters(model):
        assert torch.equal(p.detach(), theta_new[name]), name


@pytest.mark.parametrize("weights", [(1.5, 0.0), (0.5, -0.2), (float("inf"), 0.0),
                                     (0.5, float("nan")), ("a", 0.5)])
def test_fuse_refuses_weights_outside_unit_interval(weights):
    model = tiny_lora_model()
    anchor = snapshot(model)
    perturb_(model, seed=1)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fuse_(model, anchor, before, *weights)
    for name, p in trainable_parameters(model):   # nothing written
        assert torch.equal(p.detach(), before[name])


def test_fuse_bf16_combines_in_float32():
    model = tiny_lora_model(dtype=torch.bfloat16)
    frozen = frozen_state(model)
    params = trainable_parameters(model)
    assert all(p.dtype == torch.bfloat16 for _, p in params)
    anchor = snapshot(model)
    assert all(t.dtype == torch.float32 for t in anchor.values())
    perturb_(model, seed=1)
    theta_new = snapshot(model)
    perturb_(model, seed=2)
    theta_m = snapshot(model)
    fuse_(model, anchor, theta_new, 0.3, 0.7)
    for name, p in params:
        assert p.dtype == torch.bfloat16
        expected = (
            anchor[name] + 0.3 * (theta_new[name] - anchor[name]) + 0.7 * (theta_m[name] - theta_new[name])
        )
        # float32 combination, then one rounding to bf16: within one bf16 ulp
        # (relative 2**-8) of the float32 result, and almost always the exact rounding
        # (a float32 fused multiply-add may flip a near-midpoint element by one ulp)
        torch.testing.assert_close(p.detach().float(), expected, rtol=2**-8, atol=1e-6)
        same = (p.detach() == expected.to(torch.bfloat16)).float().mean().item()
        assert same >= 0.95, name
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p.detach(), frozen[name])
    # l1 on bf16 parameters is computed in float32 against the float32 anchor
    expected_l1 = sum(
        (p.detach().float() - anchor[n]).abs().sum().item() for n, p in params
    )
    assert l1_change(model, anchor) == pytest.approx(expected_l1, rel=1e-5)


def test_fuse_elementwise():
    model = tiny_lora_model()
    frozen = frozen_state(model)
    anchor = snapshot(model)
    perturb_(model, seed=1)
    theta_new = snapshot(model)
    perturb_(model, seed=2)
    theta_m = snapshot(model)
    g = torch.Generator().manual_seed(3)
    weights = {n: torch.rand(t.shape, generator=g) for n, t in anchor.items()}
    fuse_elementwise_(model, anchor, theta_new, weights)
    for name, p in trainable_parameters(model):
        w = weights[name]
        expected = anchor[name] + w * (theta_new[name] - anchor[name]) + (1 - w) * (theta_m[name] - theta_new[name])
        torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=0)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p.detach(), frozen[name])
    # a constant weight equals the global fusion with (w, 1 - w)
    copy_into_(model, theta_m)
    fuse_elementwise_(model, anchor, theta_new, {n: torch.tensor(0.25) for n in anchor})
    got = snapshot(model)
    copy_into_(model, theta_m)
    fuse_(model, anchor, theta_new, 0.25, 0.75)
    for name, p in trainable_parameters(model):
        torch.testing.assert_close(got[name], p.detach(), atol=1e-6, rtol=0)


def test_fuse_elementwise_rejects_weights_outside_unit_interval():
    model = tiny_lora_model()
    anchor = snapshot(model)
    before = snapshot(model)
    weights = {n: torch.full(t.shape, 0.5) for n, t in anchor.items()}
    weights[next(iter(weights))][0, 0] = 1.5
    with pytest.raises(ValueError):
        fuse_elementwise_(model, anchor, anchor, weights)
    for name, p in trainable_parameters(model):
        assert torch.equal(p.detach(), before[name])  # nothing written


def test_keys_mismatch_raises():
    model = tiny_lora_model()
    anchor = snapshot(model)
    first = next(iter(anchor))
    missing = {k: v for k, v in anchor.items() if k != first}
    extra = dict(anchor, **{"not.a.param": torch.zeros(1)})
    for bad in (missing, extra):
        with pytest.raises(ValueError):
            fuse_(model, bad, anchor, 0.5, 0.5)
        with pytest.raises(ValueError):
            fuse_(model, anchor, bad, 0.5, 0.5)
        with pytest.raises(ValueError):
            l1_change(model, bad)
        with pytest.raises(ValueError):
            copy_into_(model, bad)
        with pytest.raises(ValueError):
            fuse_elementwise_(model, anchor, anchor, bad)
    wrong_shape = dict(anchor, **{first: torch.zeros(3, 3)})
    with pytest.raises(ValueError):
        fuse_(model, anchor, wrong_shape, 0.5, 0.5)
    with pytest.raises(ValueError):
        fuse_(model, anchor, anchor, float("nan"), 0.5)


def test_copy_into_restores_snapshot():
    model = tiny_lora_model()
    frozen = frozen_state(model)
    snap = snapshot(model)
    perturb_(model)
    copy_into_(model, snap)
    for name, p in trainable_parameters(model):
        assert torch.equal(p.detach(), snap[name])
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p.detach(), frozen[name])


def test_fusion_keeps_parameters_trainable():
    # After an in-place fusion the parameters are still leaves that train.
    model = tiny_lora_model()
    anchor = snapshot(model)
    perturb_(model)
    fuse_(model, anchor, snapshot(model), 0.5, 0.5)
    out = model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]]))
    out.loss.backward()
    grads = [p.grad for _, p in trainable_parameters(model)]
    assert all(g is not None for g in grads)
    assert all(p.is_leaf for _, p in trainable_parameters(model))
