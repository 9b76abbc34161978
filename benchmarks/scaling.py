"""Scaling: step time and replay-memory footprint for task orders of 4 and of 15 tasks.

AIMMerging runs (the real loop) on Standard CL order 1 (4 tasks) and Long Sequence
order 4 (15 tasks) with the same steps per task. After every stage we record the
main step time, the history-loss (monitoring) time per step and per call (median:
one call of the quick mode's tiny model takes milliseconds, which a burst of another
job can double), the tokens of the
memory batches that stage's monitoring used (recomputed exactly: the draws are
seeded by step; "run" tokens are those the passes compute, padding included, after
shared prefixes are run once), and the memory's size (examples, bytes of its state, tokens).

The monitoring cost per step must not grow with the number of tasks seen: the
memory batch has a fixed size, so only the example lengths of the tasks in memory
change its cost. ``monitor_growth_ratio`` (a target) compares, on the 15-task run's
trained model, the median history-loss call with all 15 tasks in memory against the
first 3, calls alternating (:func:`interleaved_probe`); ``monitor_per_token_growth_ratio``
does the same per token run. ``in_run_monitor_growth_ratio`` (information) compares the
median call of the stages with the most tasks in memory (the last third of the 15-task
order) with that of the stages with the fewest (the 4-task order after its first task). With shared prefixes
(``method.history_share_prefix``) a memory batch from few tasks runs fewer tokens, so
the time per step grows a little with the tasks in memory, up to one plain pass.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from . import _flops
from ._common import (FULL_MODEL, QUICK_MODEL, make_config, median, memory_subset, run_trainer,
                      target, threads, time_calls, verdict, write_result)

NAME = "scaling"
ORDERS = {"4_tasks": 1, "15_tasks": 4}
PROBE_FEW_TASKS = 3


def settings(quick: bool) -> dict:
    if quick:
        return {"model": QUICK_MODEL, "steps": 8, "n_train": 64, "probe_draws": 30}
    steps = int(os.environ.get("AIMMERGING_BENCH_SCALING_STEPS", "3"))
    return {"model": FULL_MODEL, "steps": steps, "n_train": 200, "probe_draws": 4}


def batch_tokens(trainer, examples: list) -> tuple[int, int, int]:
    """(real, padded, run) tokens of a memory batch; run: what the history pass computes
    (padding included, shared prefixes once when the history loss shares them)."""
    from aimmerging.monitoring import history_shares_prefix
    from aimmerging.prefix import can_share_prefix, tokens_run

    shares = (history_shares_prefix(trainer.cfg, trainer.model) and not trainer.encoder.is_seq2seq
              and can_share_prefix(trainer.model))
    lens = [len(e.prompt) + len(e.answer) for e in trainer.encoder.encode(examples)]
    padded = len(lens) * max(lens)
    return sum(lens), padded, tokens_run(trainer.encoder.train_batch(examples)) if shares else padded


def interleaved_probe(trainer, few_tasks: int, draws: int) -> dict:
    """The history loss with the order's first ``few_tasks`` tasks in memory against all of
    them, on the trained model, one call of each in turn (warm-up first).

    Consecutive calls see the same machine: here a tiny-llama call moved between about 11
    and 16 ms from one stage of a run to the next, so stage figures from two runs made one
    after the other differ by up to 1.5x with no change in the work. Returns medians of
    seconds per call and ms per 1000 run tokens for each side.
    """
    from aimmerging.monitoring import history_batch_size

    full = trainer.memory
    sides = {"few_tasks": memory_subset(full, full.tasks[:few_tasks]), "all_tasks": full}
    times: dict = {k: [] for k in sides}
    tokens: dict = {k: [] for k in sides}
    try:
        for i in range(-1, draws):
            for name, memory in sides.items():
                trainer.passes.memory = memory
                t0 = time.perf_counter()
                trainer.passes.history_loss(("scaling_probe", i))
                if i >= 0:
                    times[name].append(time.perf_counter() - t0)
                    ex = trainer.passes.memory_batch("history", ("scaling_probe", i),
                                              history_batch_size(trainer.cfg))
                    tokens[name].append(batch_tokens(trainer, ex)[2])
    finally:
        trainer.passes.memory = full
    out = {k: {"tasks_in_memory": len(sides[k].tasks), "median_seconds_per_call": median(v),
               "ms_per_1k_run_tokens": 1e6 * median(v) * len(v) / sum(tokens[k])}
           for k, v in times.items()}
    return {**out, "draws": draws}


def _instrument(trainer, rows: list) -> None:
    """Wrap ``after_task`` to record each stage's memory batches (tokens) and the memory's size."""
    from aimmerging.monitoring import history_batch_size

    inner = trainer.method.after_task
    hb = history_batch_size(trainer.cfg)
    calls: list = []          # seconds of each history-loss call of the current stage
    time_calls(trainer.passes, "history_loss", calls)

    def after_task(stage):
        real = padded = ran = 0
        steps = trainer.counters.get("train_steps", 0) - sum(r["steps_total"] for r in rows[-1:])
        for step in range(1, steps + 1) if len(trainer.memory) else ():
            r, p, n = batch_tokens(trainer, trainer.passes.memory_batch("history", (stage.index, step), hb))
            real, padded, ran = real + r, padded + p, ran + n
        rows.append({"stage": stage.index + 1, "tasks_in_memory": len(trainer.memory.tasks),
                     "steps_total": trainer.counters.get("train_steps", 0),
                     "timing": dict(trainer.timing), "history_real_tokens": real,
                     "history_padded_tokens": padded, "history_run_tokens": ran,
                     "monitor_median_seconds": median(calls) if calls else None})
        calls.clear()
        inner(stage)
        mem = trainer.memory
        rows[-1].update({"memory_examples": len(mem),
                         "memory_state_bytes": len(json.dumps(mem.state_dict()).encode()),
                         "memory_tokens": sum(len(e.prompt) + len(e.answer)
                                              for e in trainer.encoder.encode(mem.examples()))})

    trainer.method.after_task = after_task


def _stages(rows: list) -> list:
    out, prev_t, prev_steps = [], {}, 0
    for r in rows:
        t = {k: v - prev_t.get(k, 0.0) for k, v in r["timing"].items()}
        steps = r["steps_total"] - prev_steps
        mon = t.get("monitor_seconds", 0.0)
        out.append({"stage": r["stage"], "tasks_in_memory": r["tasks_in_memory"], "steps": steps,
                    "step_seconds": t.get("train_step_seconds", 0.0) / steps,
                    "monitor_seconds_per_step": mon / steps if r["tasks_in_memory"] else None,
                    # the median call: robust to other jobs' bursts (a tiny model's call takes ms)
                    "monitor_median_seconds_per_call": r["monitor_median_seconds"],
                    "monitor_ms_per_1k_run_tokens":
                        1e6 * r["monitor_median_seconds"] * steps / r["history_run_tokens"]
                        if r["history_run_tokens"] else None,
                    "history_padded_tokens_per_step": r["history_padded_tokens"] / steps,
                    "history_run_tokens_per_step": r["history_run_tokens"] / steps,
                    "memory_examples": r["memory_examples"],
                    "memory_state_bytes": r["memory_state_bytes"], "memory_tokens": r["memory_tokens"]})
        prev_t, prev_steps = r["timing"], r["steps_total"]
    return out


def _one(s: dict, order: int, run_dir: Path) -> dict:
    cfg = make_config([f"model.name={s['model']}", "method.name=aimmerging", f"data.order={order}",
                       f"data.n_train={s['n_train']}", "data.n_test=1", "eval.max_new_tokens=1",
                       "train.epochs=1", f"train.max_steps_per_task={s['steps']}"])
    rows: list = []
    res = run_trainer(cfg, run_dir, instrument=lambda tr: _instrument(tr, rows))
    m = res["metrics"]
    stages = _stages(rows)
    t, steps = m["timing_seconds"], m["counters"]["train_steps"]
    flops = _flops.figures(res["flops"], t, m["counters"], _flops.peak(res["trainer"].accelerator.device))
    return {"tasks": len(stages), "steps_per_task": s["steps"], "flops": flops,
            "seconds_per_step": t["train_step_seconds"] / steps,
            "train_seconds_per_step": t["train_seconds"] / steps,
            "memory_examples": stages[-1]["memory_examples"],
            "memory_state_bytes": stages[-1]["memory_state_bytes"],
            "memory_tokens": stages[-1]["memory_tokens"], "stages": stages, "trainer": res["trainer"]}


def run(quick: bool, output: Path) -> dict:
    with threads(quick) as n_threads:
        s = settings(quick)
        with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
            res = {k: _one(s, o, Path(tmp) / k) for k, o in ORDERS.items()}
            probe = interleaved_probe(res["15_tasks"]["trainer"], PROBE_FEW_TASKS, s["probe_draws"])
            for r in res.values():
                del r["trainer"]
    few = [st for st in res["4_tasks"]["stages"] if st["tasks_in_memory"]]
    many = res["15_tasks"]["stages"][-5:]
    a, b = res["4_tasks"], res["15_tasks"]
    figures = {
        "mode": "quick" if quick else "full", "settings": {**s, "torch_threads": n_threads,
                                                           "orders": ORDERS},
        # targets: the interleaved probe (same model and moment, 3 tasks in memory vs 15)
        "monitor_growth_ratio": (probe["all_tasks"]["median_seconds_per_call"]
                                 / probe["few_tasks"]["median_seconds_per_call"]),
        "monitor_per_token_growth_ratio": (probe["all_tasks"]["ms_per_1k_run_tokens"]
                                           / probe["few_tasks"]["ms_per_1k_run_tokens"]),
        "interleaved_probe": probe,
        # for information: the stages of the two runs (stages 2-4 of order 1, the last 5 of order 4)
        "in_run_monitor_growth_ratio":
            median(st["monitor_median_seconds_per_call"] for st in many)
            / median(st["monitor_median_seconds_per_call"] for st in few),
        "in_run_monitor_per_token_growth_ratio":
            median(st["monitor_ms_per_1k_run_tokens"] for st in many)
            / median(st["monitor_ms_per_1k_run_tokens"] for st in few),
        "step_time_ratio": b["seconds_per_step"] / a["seconds_per_step"],
        "train_time_per_step_ratio": b["train_seconds_per_step"] / a["train_seconds_per_step"],
        "memory_bytes_ratio": b["memory_state_bytes"] / a["memory_state_bytes"],
        "memory_bytes_per_task": {k: v["memory_state_bytes"] / v["tasks"] for k, v in res.items()},
        **res,
    }
    targets = {k: target(figures[k], "<=", 1.25)
               for k in ("monitor_growth_ratio", "monitor_per_token_growth_ratio")}
    figures["targets"] = targets
    figures["summary"] = (
        f"scaling: step {a['seconds_per_step'] * 1e3:.0f} ms (4 tasks) vs "
        f"{b['seconds_per_step'] * 1e3:.0f} ms (15 tasks); monitoring per call "
        f"x{figures['monitor_growth_ratio']:.2f} with 15 tasks in memory vs {PROBE_FEW_TASKS} "
        f"(x{figures['monitor_per_token_growth_ratio']:.2f} per token; in the runs' stages, 10-14 "
        f"vs 1-3: x{figures['in_run_monitor_growth_ratio']:.2f}); memory "
        f"{a['memory_state_bytes'] / 1024:.0f} KiB vs {b['memory_state_bytes'] / 1024:.0f} KiB "
        f"({a['memory_examples']} vs {b['memory_examples']} examples); main step (15 tasks) "
        f"{_flops.describe(b['flops'])}; {verdict(targets)}")
    write_result(output, NAME, figures)
    return figures
