"""Achieved FLOP/s of the training benchmarks, against this machine's measured matmul peak.

:class:`FlopMeter` counts, during a run of the real loop, the FLOPs of every loss pass
(:mod:`aimmerging.flops`: the model's shapes and each batch's real tokens) by phase: the
main optimizer steps, the history loss, the rehearsal steps. Each phase's seconds are the
loop's own timers (``train_step_seconds``, ``monitor_seconds``, ``rehearsal_seconds``,
which :mod:`.turns` corrects for the waits), so FLOP/s = counted FLOPs / timed seconds.
:func:`peak` measures the matmul peak in the benchmark's own process, at its thread count:
the best rate of a 1024 x 1024 x 1024 product (``linear``) in float32, and in bfloat16 where the device
computes it natively (elsewhere bfloat16 is emulated and no peak of the machine).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional

#: (where, method) -> phase: the loop's main step, and the engine's memory passes
#: (``trainer.passes``: the history loss and the rehearsal)
PHASES = {("", "_optimizer_step"): "main", ("passes", "history_loss"): "history",
          ("passes", "rehearse"): "rehearsal"}
TIMERS = {"main": "train_step_seconds", "history": "monitor_seconds", "rehearsal": "rehearsal_seconds"}
PEAK_SHAPE = (1024, 1024, 1024)

_PEAKS: dict = {}


class FlopMeter:
    """Counts the FLOPs of ``trainer.loss_on`` calls by phase (wrappers on the instance).

    ``flop[phase]``, ``calls[phase]`` and ``tokens[phase]`` grow while :attr:`active`; a
    model that :func:`aimmerging.flops.model_shapes` refuses (T5) counts nothing.
    """

    def __init__(self, trainer) -> None:
        import torch

        from aimmerging.flops import model_shapes

        self.trainer, self.active, self.phase = trainer, True, None
        self.flop: dict = defaultdict(float)
        self.calls: dict = defaultdict(int)
        self.tokens: dict = defaultdict(int)
        try:
            self.shapes = model_shapes(trainer.model)
        except ValueError:
            self.shapes = None
        for (where, name), phase in PHASES.items():
            self._tag(getattr(trainer, where) if where else trainer, name, phase)
        inner = trainer.loss_on

        def loss_on(examples, *a, **k):
            if self.active and self.phase and self.shapes is not None:
                self.count(examples, torch.is_grad_enabled())
            return inner(examples, *a, **k)

        trainer.loss_on = loss_on

    def _tag(self, owner, name: str, phase: str) -> None:
        inner = getattr(owner, name)

        def tagged(*a, **k):
            outer, self.phase = self.phase, phase
            try:
                return inner(*a, **k)
            finally:
                self.phase = outer

        setattr(owner, name, tagged)

    def count(self, examples: list, backward: bool) -> None:
        """Add one pass over ``examples`` (a LoRA backward pass too when ``backward``)."""
        from aimmerging.flops import batch_flops

        enc = self.trainer.encoder.encode(examples)       # cached: no tokenisation here
        lengths = [len(e.prompt) + len(e.answer) for e in enc]
        labelled = sum(len(e.answer) for e in enc)        # causal LM: every answer token is scored
        self.flop[self.phase] += batch_flops(self.shapes, lengths, labelled, backward)["total"]
        self.calls[self.phase] += 1
        self.tokens[self.phase] += sum(lengths)


def peak(device=None, bfloat16: Optional[bool] = None) -> dict:
    """This machine's matmul peak at torch's current thread count (cached per process):
    ``{"float32_flop_per_s", "bfloat16_flop_per_s" (None unless native or asked), "shape",
    "torch_threads", "device"}``."""
    import torch

    from aimmerging.precision import matmul_flops_per_second, native_bfloat16

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    want_bf16 = native_bfloat16(device) if bfloat16 is None else bfloat16
    key = (str(device), torch.get_num_threads(), want_bf16)
    if key not in _PEAKS:
        rate = {dt: matmul_flops_per_second(dt, *PEAK_SHAPE, device=device, repeats=5, min_seconds=0.2)
                for dt in ((torch.float32, torch.bfloat16) if want_bf16 else (torch.float32,))}
        _PEAKS[key] = {"float32_flop_per_s": rate[torch.float32],
                       "bfloat16_flop_per_s": rate.get(torch.bfloat16),
                       "bfloat16_native": native_bfloat16(device), "shape": list(PEAK_SHAPE),
                       "torch_threads": torch.get_num_threads(), "device": str(device)}
    return _PEAKS[key]


def rate(flop: float, seconds: float, peaks: dict, steps: Optional[int] = None) -> dict:
    """One phase's figures: FLOPs, seconds, FLOP/s and its fraction of each measured peak."""
    out = {"flop": flop, "seconds": seconds,
           "flop_per_s": flop / seconds if seconds > 0 else float("nan")}
    if steps:
        out["flop_per_step"] = flop / steps
    for dt in ("float32", "bfloat16"):
        p = peaks.get(f"{dt}_flop_per_s")
        if p:
            out[f"fraction_of_{dt}_peak"] = out["flop_per_s"] / p
    return out


def figures(meter: Optional[FlopMeter], timing: dict, counters: dict, peaks: dict) -> dict:
    """``{"peak": peaks, "main": rate, "history": rate, "rehearsal": rate}`` for the phases that
    ran (see :func:`rate`); ``{"peak": peaks, "note": ...}`` when nothing was counted."""
    if meter is None or meter.shapes is None:
        return {"peak": peaks, "note": "FLOPs are counted for decoder-only models only"}
    out: dict = {"peak": peaks, "model_shapes": meter.shapes.as_dict()}
    for phase, timer in TIMERS.items():
        if meter.calls.get(phase):
            steps = counters.get("train_steps") if phase == "main" else meter.calls[phase]
            out[phase] = {**rate(meter.flop[phase], timing.get(timer, 0.0), peaks, steps),
                          "passes": meter.calls[phase], "tokens": meter.tokens[phase]}
    return out


def describe(fig: dict, phase: str = "main") -> str:
    """``"main step 61 GFLOP/s = 74% of the float32 matmul peak (82 GFLOP/s)"``."""
    p, peaks = fig.get(phase), fig["peak"]
    if not p:
        return f"{phase}: no FLOPs counted"
    text = (f"{p['flop_per_s'] / 1e9:.1f} GFLOP/s = {p.get('fraction_of_float32_peak', float('nan')):.0%} "
            f"of the float32 matmul peak ({peaks['float32_flop_per_s'] / 1e9:.0f} GFLOP/s)")
    if peaks.get("bfloat16_flop_per_s") and peaks.get("bfloat16_native"):
        text += f", {p['fraction_of_bfloat16_peak']:.0%} of the bfloat16 one"
    return text
