"""Where a main step's time goes: one step under torch's profiler, its operators in groups.

:func:`step_profile` runs one main step's work (the loss of a training batch, the backward
pass, clipping, AdamW) on a trained :class:`~aimmerging.loop.ContinualTrainer` under
``torch.profiler``, and sums the operators' own (self) CPU time by group: the matrix
products, attention, element-wise work (norms, activations, RoPE, residuals), dropout, the
loss, copies, views (no data moved: ``view``, ``transpose``, the ``linear`` and ``matmul``
wrappers), autograd's own bookkeeping, the optimizer, the rest. The products' FLOPs come from the profiler's own
count (``with_flops``), so their rate says how close the GEMMs themselves run to the peak.
The profiler adds a cost per operator, so shares of small operators are upper bounds.
"""

from __future__ import annotations

GROUPS = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "MmBackward")),
    ("attention", ("scaled_dot_product", "scaleddotproduct", "flash_attention", "efficient_attention",
                   "aten::_softmax")),
    ("dropout", ("bernoulli", "dropout")),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss")),
    ("optimizer", ("_foreach", "adamw", "aten::lerp", "aten::addcdiv", "aten::addcmul")),
    ("copies", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat", "aten::index",
                "aten::fill_", "aten::zero_", "aten::empty", "aten::to")),
    ("element-wise", ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::rsqrt", "aten::pow",
                      "aten::mean", "aten::silu", "aten::neg", "aten::sum", "aten::exp", "aten::where",
                      "aten::sqrt", "aten::norm", "aten::linalg_vector_norm", "aten::clamp",
                      "aten::sigmoid", "aten::threshold", "aten::masked_fill")),
    ("views", ("aten::view", "as_strided", "aten::t", "transpose", "reshape", "aten::slice",
               "_unsafe_view", "aten::expand", "unsqueeze", "permute", "aten::select", "split",
               "squeeze", "aten::detach", "aten::alias", "aten::linear", "aten::matmul")),
    ("autograd", ("autograd::", "Backward")),
)


def _group(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k.lower() in low for k in keys):
            return group
    return "other"


def step_profile(trainer, examples: list) -> dict:
    """One main step on ``examples`` under the profiler (after one unprofiled warm-up step).

    Returns ``{"seconds_by_group", "share_by_group", "profiled_seconds", "unprofiled_seconds",
    "matmul_flop", "matmul_flop_per_s"}``. The step changes the adapter: call it after the run.
    """
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    def step():
        loss = trainer.loss_on(examples)
        trainer.accelerator.backward(loss)
        trainer._clip(trainer.optimizer)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)

    trainer.model.train()
    t0 = time.perf_counter()
    step()
    plain = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        step()
    seconds: dict = {}
    flop = matmul_seconds = 0.0
    for ev in prof.key_averages():
        g = _group(ev.key)
        s = ev.self_cpu_time_total / 1e6
        seconds[g] = seconds.get(g, 0.0) + s
        if g == "matmul":
            flop += ev.flops or 0
            matmul_seconds += s
    total = sum(seconds.values())
    return {"seconds_by_group": seconds,
            "share_by_group": {g: s / total for g, s in sorted(seconds.items(), key=lambda x: -x[1])},
            "profiled_seconds": total, "unprofiled_seconds": plain, "matmul_flop": flop,
            "matmul_flop_per_s": flop / matmul_seconds if matmul_seconds else float("nan"),
            "threads": torch.get_num_threads()}
