"""Rehearsal-based knowledge fusion on a model's trainable parameters (SPEC.md
"Rehearsal-based knowledge fusion"; paper section 3.2, eq. 5-7).

All functions act on the *trainable* parameters only (``requires_grad=True``:
with PEFT, the LoRA A and B matrices), so the frozen backbone is never read for
fusion nor written. A *snapshot* is a ``dict[str, torch.Tensor]`` keyed by the
parameter names of ``model.named_parameters()``; each tensor is a float32,
detached copy with the shape of its parameter, on the parameter's device.

Arithmetic is vectorised over all tensors at once with ``torch._foreach_*`` ops
and always done in float32, then cast back to each parameter's dtype
(bf16 / fp16 parameters are supported).

Typical merge at step j (SPEC.md, with ``plan`` from
:meth:`aimmerging.controller.MergeController.on_merge`)::

    l1 = l1_change(model, anchor)             # sum |theta_j - theta_anchor|
    plan = controller.on_merge(l1)
    theta_new = snapshot(model)               # theta_j
    ... run plan.rehearsal_steps steps on memory batches ...   # -> theta_M
    fuse_(model, anchor, theta_new, plan.alpha_new, plan.alpha_past)
    anchor = snapshot(model)                  # theta_anchor = fused theta

Take the new anchor with :func:`snapshot` *after* :func:`fuse_`, so it equals the
stored (possibly bf16-rounded) parameters exactly.

Multi-process note: each function works on whatever device the parameters live
on, and on the local copy only. Under DDP every rank holds the same parameters
and computes the same result. Under sharded training (FSDP / ZeRO-3) each rank
sees its shard only: ``l1_change`` then returns the local part, which the caller
must all-reduce (sum) before giving it to the controller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

__all__ = [
    "trainable_parameters",
    "snapshot",
    "l1_change",
    "fuse_",
    "fuse_elementwise_",
    "copy_into_",
]

Snapshot = dict[str, torch.Tensor]


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Return ``(name, parameter)`` for every parameter with ``requires_grad=True``.

    Order and names follow ``model.named_parameters()`` (shared parameters once).
    These are the parameters theta of SPEC.md (with PEFT: the LoRA A and B weights).
    """
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def snapshot(model: torch.nn.Module) -> Snapshot:
    """Return float32, detached copies of the trainable parameters.

    Used for theta_anchor (after a merge / at task start) and theta_new (theta_j,
    before rehearsal). Each value has the shape of its parameter and lives on the
    parameter's device; later training does not change it.
    """
    with torch.no_grad():
        return {
            name: p.detach().to(dtype=torch.float32, copy=True)
            for name, p in trainable_parameters(model)
        }


def _aligned(
    params: list[tuple[str, torch.nn.Parameter]],
    snap: Mapping[str, torch.Tensor],
    what: str,
) -> list[torch.Tensor]:
    """Return ``snap``'s tensors in parameter order, as float32 on each parameter's
    device; ``ValueError`` when the keys or shapes differ from the parameters'."""
    names = [name for name, _ in params]
    if set(names) != set(snap.keys()):
        missing = sorted(set(names) - set(snap.keys()))
        extra = sorted(set(snap.keys()) - set(names))
        raise ValueError(
            f"{what} does not match the model's trainable parameters: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} "
            f"({len(missing)}), unexpected {extra[:5]}{'...' if len(extra) > 5 else ''} "
            f"({len(extra)})"
        )
    out = []
    for name, p in params:
        t = snap[name]
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{what}[{name!r}] is not a tensor")
        if t.shape != p.shape:
            raise ValueError(
                f"{what}[{name!r}] has shape {tuple(t.shape)}, the parameter {tuple(p.shape)}"
            )
        out.append(t.detach().to(device=p.device, dtype=torch.float32))
    return out


def _check_weight(name: str, value: float) -> float:
    """``value`` as a float; ValueError unless it is a finite number in [0, 1] (SPEC.md
    fusion step 5)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not math.isfinite(x) or not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be a finite number in [0, 1], got {value!r}")
    return x


def _current_float32(params: list[tuple[str, torch.nn.Parameter]]) -> list[torch.Tensor]:
    # For float32 parameters this is the parameter's storage itself (no copy):
    # callers must only read it before the final write.
    return [p.detach().to(dtype=torch.float32) for _, p in params]


def _write(params: list[tuple[str, torch.nn.Parameter]], values: list[torch.Tensor]) -> None:
    """Copy float32 ``values`` into the parameters in place, casting to their dtype."""
    targets = [p.detach() for _, p in params]
    with torch.no_grad():
        if hasattr(torch, "_foreach_copy_"):
            torch._foreach_copy_(targets, values)
        else:  # pragma: no cover - older torch
            for t, v in zip(targets, values):
                t.copy_(v)


def l1_change(model: torch.nn.Module, anchor: Mapping[str, torch.Tensor]) -> float:
    """Return ``sum |theta - theta_anchor|`` over all trainable parameters, in float32.

    The l1 norm of the task vector tau_b (paper eq. 2-3 numerator; SPEC.md "On a
    merge"), given to :meth:`MergeController.on_merge`. ``anchor`` is a
    :func:`snapshot` (each tensor shaped like its parameter). Per-tensor sums are
    float32; the sum over devices is a Python float.

    Raises:
        ValueError: the keys or shapes of ``anchor`` differ from the trainable parameters'.
    """
    params = trainable_parameters(model)
    if not params:
        return 0.0
    with torch.no_grad():
        anchors = _aligned(params, anchor, "anchor")
        diffs = torch._foreach_sub(_current_float32(params), anchors)
        norms = torch._foreach_norm(diffs, 1)
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for t in norms:
            by_device.setdefault(t.device, []).append(t)
        return float(sum(float(torch.stack(ts).sum()) for ts in by_device.values()))


def fuse_(
    model: torch.nn.Module,
    anchor: Mapping[str, torch.Tensor],
    theta_new: Mapping[str, torch.Tensor],
    alpha_new: float,
    alpha_past: float,
) -> None:
    """Fuse the task vectors into the trainable parameters, in place (paper eq. 7).

    With the model currently holding theta_M (after rehearsal), sets

        theta = anchor + alpha_new * (theta_new - anchor) + alpha_past * (theta_M - theta_new)

    i.e. ``theta_anchor + alpha_new * tau_new + alpha_past * tau_past`` (SPEC.md
    fusion step 4; tau_new eq. 5, tau_past eq. 6). One pair of scalars for every
    tensor (global merge), applied to each trainable tensor on its own: with LoRA,
    A and B are fused separately, which is not fusing their product B·A (the paper's
    theta is the trainable parameters). ``anchor`` and ``theta_new`` are snapshots
    (each tensor shaped like its parameter); they are not modified. The combination
    is computed in float32 and cast back to each parameter's dtype. At
    ``(alpha_new, alpha_past) = (1, 0)`` the parameters become ``theta_new`` bit for
    bit (SPEC.md fusion step 5; the float32 sum ``anchor + 1 * tau_new`` would move
    some elements by one ulp).

    Raises:
        ValueError: keys or shapes of a snapshot differ from the trainable
            parameters', or a weight is not a finite number in [0, 1].
    """
    a_new = _check_weight("alpha_new", alpha_new)
    a_past = _check_weight("alpha_past", alpha_past)
    params = trainable_parameters(model)
    if not params:
        return
    with torch.no_grad():
        anchors = _aligned(params, anchor, "anchor")
        news = _aligned(params, theta_new, "theta_new")
        if a_new == 1.0 and a_past == 0.0:               # no-op merge: theta_j exactly
            _write(params, news)
            return
        current = _current_float32(params)
        out = torch._foreach_sub(news, anchors)          # tau_new
        torch._foreach_mul_(out, a_new)                  # alpha_new * tau_new
        torch._foreach_add_(out, anchors)                # anchor + alpha_new * tau_new
        tau_past = torch._foreach_sub(current, news)     # theta_M - theta_new
        torch._foreach_add_(out, tau_past, alpha=a_past)
        _write(params, out)


def fuse_elementwise_(
    model: torch.nn.Module,
    anchor: Mapping[str, torch.Tensor],
    theta_new: Mapping[str, torch.Tensor],
    weight_new: Mapping[str, torch.Tensor],
) -> None:
    """Element-wise (importance-weighted) fusion, in place, for the Recurrent-KIF
    style baseline (paper table 3 "+IFM").

    With the model holding theta_M and ``w = weight_new[name]`` (a tensor with the
    parameter's shape, or broadcastable to it, values in [0, 1]) sets, element by
    element,

        theta = anchor + w * (theta_new - anchor) + (1 - w) * (theta_M - theta_new)

    computed in float32 and cast back to each parameter's dtype.

    Raises:
        ValueError: keys mismatch, a shape mismatch, or a weight outside [0, 1] / NaN.
    """
    params = trainable_parameters(model)
    if not params:
        return
    with torch.no_grad():
        anchors = _aligned(params, anchor, "anchor")
        news = _aligned(params, theta_new, "theta_new")
        names = [name for name, _ in params]
        if set(names) != set(weight_new.keys()):
            _aligned(params, weight_new, "weight_new")  # raises with the details
        weights: list[torch.Tensor] = []
        for name, p in params:
            w = weight_new[name]
            if not isinstance(w, torch.Tensor):
                w = torch.as_tensor(w)
            w = w.detach().to(device=p.device, dtype=torch.float32)
            try:
                torch.broadcast_shapes(w.shape, p.shape)
            except RuntimeError:
                raise ValueError(
                    f"weight_new[{name!r}] of shape {tuple(w.shape)} does not broadcast "
                    f"to the parameter's {tuple(p.shape)}"
                ) from None
            weights.append(w.expand(p.shape))
        bad = [((w < 0) | (w > 1) | torch.isnan(w)).any() for w in weights]
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for b in bad:
            by_device.setdefault(b.device, []).append(b)
        if any(bool(torch.stack(bs).any()) for bs in by_device.values()):
            raise ValueError("weight_new values must lie in [0, 1]")
        current = _current_float32(params)
        out = torch._foreach_sub(news, anchors)           # tau_new
        torch._foreach_mul_(out, weights)                 # w * tau_new
        torch._foreach_add_(out, anchors)
        tau_past = torch._foreach_sub(current, news)      # theta_M - theta_new
        one_minus = torch._foreach_neg(weights)
        torch._foreach_add_(one_minus, 1.0)               # 1 - w
        torch._foreach_mul_(tau_past, one_minus)
        torch._foreach_add_(out, tau_past)
        _write(params, out)


def copy_into_(model: torch.nn.Module, snap: Mapping[str, torch.Tensor]) -> None:
    """Load a :func:`snapshot` back into the trainable parameters, in place.

    Each value (shaped like its parameter) is cast to the parameter's dtype and
    device. Frozen parameters are untouched.

    Raises:
        ValueError: keys or shapes differ from the trainable parameters'.
    """
    params = trainable_parameters(model)
    if not params:
        return
    with torch.no_grad():
        _write(params, _aligned(params, snap, "snapshot"))
