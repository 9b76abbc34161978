"""How the history-loss pass runs: its memory batch, shared prefixes (:mod:`.prefix`) and
its precision.

The memory batch (``method.history_batch_size``, default 2; ``method.history_draw``,
default ``"interval"``): one batch of 2 memory examples is drawn at the start of each merge
interval (the task's start or a merge) and kept until the next merge. The forgetting
threshold is ``gamma_forget`` times the mean loss of the interval's first ``2S/3`` steps, so
a kept batch compares the same examples' loss before and after: it rises only when the
parameters move, and sampling alone never activates the forgetting signal. A new batch every
step (``"step"``, the paper's "a batch of historical data" beside each training batch) needs
the training batch's 8 examples to keep its sampling noise under the threshold, and that
pass costs about a third of a training step on a CPU; at a new batch of 2 per step, sampling
alone activated the signal in a fifth to a half of the intervals and cost 3 OP points. The
README ("The memory batch of the history loss") gives the measurements.

The history loss (SPEC.md: mean loss on one memory batch after every optimizer step,
no gradient, dropout off) is a forward pass as long as a training step's forward, run
at every step of every task after the first: at the paper's memory batch it is about a
third of a LoRA training step on a CPU (``aimmerging bench --only overhead``). Nothing
flows back from it, and the controller compares it only with ``gamma_forget`` (2) times
its own calibration mean, so it need not be computed in float32: in bfloat16 each memory
example's loss under SmolLM2-135M moves by a few hundredths (losses about 1), and the pass is
about 1.5x faster on a CPU with AVX512-BF16 (``aimmerging bench --only overhead``:
``history_batch_sweep`` and ``signal_noise``).

``method.history_precision``:

- ``"model"``: the pass runs as the model does (its dtype, and Accelerate's mixed
  precision when one is set);
- ``"bfloat16"``: under ``torch.autocast(dtype=bfloat16)`` on the model's device;
- ``"auto"`` (default): bfloat16 when the backbone's weights are float32 (the LoRA
  adapter always is), the model has at least
  :data:`~aimmerging.prefix.MIN_SHARING_PARAMETERS` parameters (a tiny model's pass is
  per-operation cost, which autocast's casts only add to) and bfloat16 measured faster on
  its device (:func:`aimmerging.precision.bfloat16_pays`: native bfloat16, and a cached
  probe of a matmul of the model's shapes at least 1.1x float32's rate); otherwise ``"model"``.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Optional

import torch

from .losses import _unwrap
from .precision import bfloat16_pays, native_bfloat16, probe_shape  # noqa: F401 (re-exported)
from .prefix import sharing_pays


def history_batch_size(cfg) -> int:
    """The memory batch of the history loss, in examples: ``method.history_batch_size``, or the
    training batch size where it is None."""
    return cfg.method.history_batch_size or cfg.train.batch_size


def history_key(cfg, stage_index: int, step: int, interval_start: int = 1) -> tuple:
    """The seed key of the memory batch of ``step`` (1-based, in the stage): the step's own
    (``method.history_draw: step``), or the first step of its merge interval (``interval``:
    the same batch until the next merge; a method without merges keeps its task's first)."""
    if cfg.method.history_draw == "interval":
        return stage_index, "interval", interval_start
    return stage_index, step


#: the smallest memory batch whose shared prefixes ``"auto"`` runs once: with fewer rows the
#: prefix pass and the cache copies cost about what the repeated prefix tokens do. SmolLM2 on
#: one CPU thread, bfloat16, plain / shared time with one task in memory and with two: 0.93x
#: and 0.91x at a batch of 2 (``aimmerging bench --only overhead``, ``prefix_sharing``); in a
#: probe outside the benchmarks 1.10x and 0.89x at 3, 1.13x and 0.87x at 4, 1.29x and 1.14x at 6
MIN_SHARED_ROWS = 6


def history_shares_prefix(cfg, model) -> bool:
    """``method.history_share_prefix`` resolved: ``"auto"`` shares when :func:`sharing_pays` and
    the memory batch has at least :data:`MIN_SHARED_ROWS` rows."""
    share = cfg.method.history_share_prefix
    if share == "auto":
        return sharing_pays(model) and history_batch_size(cfg) >= MIN_SHARED_ROWS
    return bool(share)


def history_dtype(setting: str, model) -> torch.dtype | None:
    """``method.history_precision`` resolved for ``model`` (a Hugging Face model, PEFT- or
    DDP-wrapped or not): ``torch.bfloat16`` for an autocast pass, None for the model's own
    precision. Raises ValueError for an unknown setting."""
    if setting == "model":
        return None
    if setting == "bfloat16":
        return torch.bfloat16
    if setting != "auto":
        raise ValueError(f"method.history_precision: {setting!r} is not auto, model or bfloat16")
    inner = _unwrap(model)      # the backbone's dtype and device (the LoRA adapter is float32)
    if getattr(inner, "dtype", None) != torch.float32 or not sharing_pays(model):
        return None
    return torch.bfloat16 if bfloat16_pays(inner.device, probe_shape(inner.config)) else None


def describe_history_pass(cfg, model) -> str:
    """One line for the run log: the memory batch, the precision and the prefix sharing."""
    setting = cfg.method.history_precision
    precision = "bfloat16 autocast" if history_dtype(setting, model) else "model precision"
    shared = (f"{'shared prefixes' if history_shares_prefix(cfg, model) else 'plain batch'} "
              f"(method.history_share_prefix: {str(cfg.method.history_share_prefix).lower()})")
    draw = "a new one every step" if cfg.method.history_draw == "step" else "one per merge interval"
    return (f"memory batch {history_batch_size(cfg)} ({draw}, method.history_draw: "
            f"{cfg.method.history_draw}), {precision} (method.history_precision: {setting}), {shared}")


def history_autocast(setting: str, model) -> contextlib.AbstractContextManager:
    """The context the history-loss pass runs in (see the module docstring)."""
    dtype = history_dtype(setting, model)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=dtype)


_FLAT_MODULES: "weakref.WeakKeyDictionary[torch.nn.Module, Optional[list]]" = weakref.WeakKeyDictionary()


def _flat_modules(model: torch.nn.Module) -> Optional[list]:
    """Every module of ``model`` when none changes what ``train(mode)`` does beyond setting the
    ``training`` flags (``nn.Module.train``; transformers' override without kernels); else None."""
    from transformers import PreTrainedModel

    mods = list(model.modules())
    for m in mods:
        train = type(m).train
        if train is torch.nn.Module.train:
            continue
        if train is PreTrainedModel.train and not getattr(m, "use_kernels", False):
            continue
        return None                   # DDP, DoRA ...: their own train() runs
    return mods


def set_training(model: torch.nn.Module, mode: bool) -> None:
    """``model.train(mode)`` as one flat pass over its modules: the same ``training`` flags
    (hence the same results), without ``train``'s recursion through every module's
    ``__setattr__`` (SmolLM2 has 999 modules), which the history loss pays twice a step. Falls back to ``model.train(mode)`` where a module
    overrides ``train`` (:func:`_flat_modules`). The module list is kept per model."""
    if model not in _FLAT_MODULES:
        _FLAT_MODULES[model] = _flat_modules(model)
    mods = _FLAT_MODULES[model]
    if mods is None:
        model.train(mode)
        return
    for m in mods:
        object.__setattr__(m, "training", mode)
