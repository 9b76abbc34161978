"""Overhead: AIMMerging against LoRAReplay, side by side in one invocation.

Both methods run the real :class:`~aimmerging.loop.ContinualTrainer` on the same
task stream, model, batch size and number of steps per task (``max_steps_per_task``),
side by side: in one process, taking turns step by step (:mod:`.turns`), so that the drift
of a shared machine's speed reaches both alike (figures are medians over repeats). The split of
AIMMerging's training time comes from the loop's own timers:

- ``train_step_seconds``: main optimizer steps (forward, backward, clip, AdamW);
- ``monitor_seconds``: the history loss (one no-gradient pass on a memory batch per step);
- ``rehearsal_seconds``: rehearsal steps at merges (the algorithm's own work);
- ``merge_seconds``: the merge operations (L1 change, snapshots, fusion), rehearsal excluded;
- ``other``: the rest of the training time (loop bookkeeping, in-task checkpoints).

Then, on the trained model, the history loss is timed at memory batches of 8, 4, 2
and 1 and its sampling noise (standard deviation over independent draws at fixed
parameters) is reported for each, as the model runs and under bfloat16 autocast
(``method.history_precision``, :mod:`aimmerging.monitoring`): a smaller memory batch is
cheaper but noisier. ``signal_noise`` turns that noise into what the controller does:
from every memory example's loss, the real merge controller runs on freshly drawn memory
batches at fixed parameters, so that every forgetting activation is sampling alone
(``_history_probes.sampling_activations``); and how far bfloat16 moves each example's loss.
The run's own memory batch is also timed with and without shared-prefix passes
(``prefix_sharing``: the history loss runs each task's instruction once, ``aimmerging.prefix``),
with every task in memory and with the first task's examples alone.
Last, a few rehearsal steps are timed apart (``rehearsal_probe``): in a short run
every merge may come at the deferral limit with no forgetting activation, hence
alpha_past = 0 and no rehearsal step at all, so the timed run alone says nothing of
their cost.

Every loss pass's FLOPs are counted (``_flops.FlopMeter``, :mod:`aimmerging.flops`), so the
targets hold on any CPU: they compare times with the FLOPs they buy, on the machine the
benchmark runs on (docs/performance.md, "Overhead"):

- ``monitor_to_flop_share_ratio`` <= 1.10: the history pass's share of a main step's time
  over its share of the main step's FLOPs (a memory batch of 2 forward against a training
  batch of 8 forward and backward: about 12.5%); 1.0 means the pass runs at the main step's
  FLOP/s, the limit of the work it does;
- ``merge_to_main_ratio`` <= 0.01: the merge operations against the main steps' time;
- ``run_to_flop_budget_ratio`` <= 1.05: AIMMerging's training time over its FLOPs (main,
  history and rehearsal passes) at LoRAReplay's FLOP/s (its FLOPs over its training time).

``monitor_to_step_ratio`` (target 10% once) and ``run_to_step_budget_ratio`` (1.05x, counting
only the steps) are kept for information: they measure the FLOPs the algorithm adds, which
no code change can remove. ``AIMMERGING_BENCH_OVERHEAD_PROBES=0`` skips the probes on the
trained model (sweep, signal noise, prefix sharing) but the rehearsal one.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from pathlib import Path


from . import _flops
from ._history_probes import history_sweep, prefix_probe, signal_noise
from ._common import (FULL_MODEL, QUICK_MODEL, make_config, median, run_trainer, target,
                      threads, time_calls, verdict, write_result)
from .turns import run_in_turns

NAME = "overhead"


def settings(quick: bool) -> dict:
    if quick:
        return {"model": QUICK_MODEL, "tasks": ["dbpedia", "amazon", "yahoo"], "steps": 30,
                "n_train": 240, "repeats": 3, "draws": 30, "probe_steps": 5, "probes": True}
    steps = int(os.environ.get("AIMMERGING_BENCH_OVERHEAD_STEPS", "30"))
    ntask = int(os.environ.get("AIMMERGING_BENCH_OVERHEAD_TASKS", "2"))
    probes = os.environ.get("AIMMERGING_BENCH_OVERHEAD_PROBES", "1").strip() not in ("0", "")
    return {"model": FULL_MODEL, "tasks": ["dbpedia", "amazon", "yahoo", "agnews"][:ntask],
            "steps": steps, "n_train": 200, "repeats": 1, "draws": 8, "probe_steps": 3,
            "probes": probes}


def _config(s: dict, method: str):
    """cpu_small with the benchmark's model, tasks and steps (``$AIMMERGING_BENCH_HISTORY_BATCH``
    and ``_DRAW`` set ``method.history_batch_size`` and ``method.history_draw``; otherwise the
    config's values, by default 2 and ``interval``)."""
    extra = []
    if os.environ.get("AIMMERGING_BENCH_HISTORY_BATCH"):
        extra.append(f"method.history_batch_size={int(os.environ['AIMMERGING_BENCH_HISTORY_BATCH'])}")
    if os.environ.get("AIMMERGING_BENCH_HISTORY_DRAW"):
        extra.append(f"method.history_draw={os.environ['AIMMERGING_BENCH_HISTORY_DRAW']}")
    return make_config([f"model.name={s['model']}", f"method.name={method}",
                        f"data.tasks=[{','.join(s['tasks'])}]", f"data.n_train={s['n_train']}",
                        "data.n_test=4", "eval.max_new_tokens=2", "train.epochs=3",
                        f"train.max_steps_per_task={s['steps']}", *extra])


def _instrument(trainer, calls: dict) -> None:
    """Record the duration of every main step and history-loss call (wrappers on the instance)."""
    for obj, name in ((trainer, "_optimizer_step"), (trainer.passes, "history_loss")):
        calls[name] = []
        time_calls(obj, name, calls[name])


def _figures(res: dict, calls: dict) -> dict:
    tr, m = res["trainer"], res["metrics"]
    t, c = m["timing_seconds"], m["counters"]
    monitored = sum(1 for row in tr.writer.traces.signals if row.get("history_loss") is not None)
    steps = c.get("train_steps", 0)
    parts = {k: t.get(k, 0.0) for k in ("train_step_seconds", "monitor_seconds", "rehearsal_seconds",
                                         "merge_seconds")}
    return {
        "train_seconds": t.get("train_seconds", 0.0), **parts,
        "other_seconds": t.get("train_seconds", 0.0) - sum(parts.values()),
        "eval_seconds": t.get("eval_seconds", 0.0), "run_seconds": res["run_seconds"],
        "train_steps": steps, "monitored_steps": monitored,
        "rehearsal_steps": c.get("rehearsal_steps", 0),
        "rehearsal_steps_skipped": c.get("rehearsal_steps_skipped", 0),
        "merges": c.get("merges", 0),
        "seconds_per_step": parts["train_step_seconds"] / steps if steps else float("nan"),
        "monitor_seconds_per_step": parts["monitor_seconds"] / monitored if monitored else 0.0,
        "median_step_seconds": median(calls.get("_optimizer_step", [])),
        "median_monitor_seconds": median(calls.get("history_loss", [])),
        "seconds_per_step_by_stage": _per_stage(res["stages"]),
        # FLOPs counted by phase (benchmarks/_flops.py), for the FLOP-share targets
        **{f"{phase}_flop": res["flops"].flop.get(phase, 0.0) for phase in _flops.TIMERS},
        "history_passes": res["flops"].calls.get("history", 0),
    }


def _per_stage(stages: list[dict]) -> list[float]:
    """Main-step seconds per step of each stage, from the timers' totals at each stage's end
    (the first stage is the same plain LoRA training in both methods)."""
    out, seconds_before, steps_before = [], 0.0, 0
    for st in stages:
        seconds = st["timing"].get("train_step_seconds", 0.0)
        steps = st["counters"].get("train_steps", 0)
        n = steps - steps_before
        out.append((seconds - seconds_before) / n if n else math.nan)
        seconds_before, steps_before = seconds, steps
    return out


def _total_flop(side: dict) -> float:
    return sum(side[f"{phase}_flop"] for phase in _flops.TIMERS)


def _ratios(aim: dict, rep: dict) -> dict:
    step = aim["seconds_per_step"]
    rep_step = rep["train_seconds"] / rep["train_steps"]
    budget = (aim["train_steps"] + aim["rehearsal_steps"]) * rep_step
    share = ((aim["history_flop"] / aim["history_passes"]) / (aim["main_flop"] / aim["train_steps"])
             if aim["history_passes"] and aim["main_flop"] else math.nan)
    rep_rate = _total_flop(rep) / rep["train_seconds"] if rep["train_seconds"] else math.nan
    return {
        "total_time_ratio": aim["train_seconds"] / rep["train_seconds"],
        "wall_time_ratio": aim["run_seconds"] / rep["run_seconds"],
        "main_step_ratio": step / rep["seconds_per_step"],
        "monitor_to_step_ratio": aim["monitor_seconds_per_step"] / step,
        "monitor_share_of_main_ratio": aim["monitor_seconds"] / aim["train_step_seconds"],
        "rehearsal_to_main_ratio": aim["rehearsal_seconds"] / aim["train_step_seconds"],
        "merge_to_main_ratio": aim["merge_seconds"] / aim["train_step_seconds"],
        "other_to_main_ratio": aim["other_seconds"] / aim["train_step_seconds"],
        "run_to_step_budget_ratio": aim["train_seconds"] / budget,
        # against the FLOPs (docs/performance.md): a history pass's share of a main step's FLOPs,
        # its time share over that (1.0: the pass runs at the main step's FLOP/s), and the
        # training time over the run's FLOPs at LoRAReplay's FLOP/s (its whole training time)
        "history_flop_share_ratio": share,
        "monitor_to_flop_share_ratio": (aim["monitor_seconds_per_step"] / step / share
                                        if share else math.nan),
        "run_to_flop_budget_ratio": aim["train_seconds"] / (_total_flop(aim) / rep_rate)
        if rep_rate and _total_flop(aim) else math.nan,
        # medians of per-call durations: robust to other jobs' bursts on a shared machine
        "median_monitor_to_step_ratio": aim["median_monitor_seconds"] / aim["median_step_seconds"],
        "median_main_step_ratio": aim["median_step_seconds"] / rep["median_step_seconds"],
        "first_task_main_step_ratio": (aim["seconds_per_step_by_stage"][0]
                                       / rep["seconds_per_step_by_stage"][0]),
    }


def rehearsal_probe(trainer, n_steps: int, step_seconds: float) -> dict:
    """Seconds per rehearsal step (median of ``n_steps`` single steps) and its ratio to a main step."""
    times = []
    for i in range(n_steps):
        t0 = time.perf_counter()
        trainer.passes.rehearse(1, ("probe", i), trainer.cfg.train.lr, trainer.rehearsal_optimizer)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    return {"steps": n_steps, "seconds_per_step": sec,
            "rehearsal_step_to_main_step_ratio": sec / step_seconds}


def run(quick: bool, output: Path) -> dict:
    with threads(quick) as n_threads:
        return _run(quick, output, n_threads)


def _run(quick: bool, output: Path, n_threads: int) -> dict:
    from aimmerging.monitoring import history_batch_size, history_dtype
    from aimmerging.runner import load_tasks

    s = settings(quick)
    per = {"replay": [], "aimmerging": []}
    sweep = probe = sharing = noise = used = rates = None
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as tmp:
        tasks = load_tasks(_config(s, "replay"))
        for r in range(s["repeats"]):
            methods = ("replay", "aimmerging")
            calls: dict = {m: {} for m in methods}
            jobs = [{"cfg": _config(s, m), "run_dir": Path(tmp) / f"{m}_{r}", "tasks": tasks,
                     "instrument": lambda tr, c=calls[m]: _instrument(tr, c)} for m in methods]
            done = dict(zip(methods, run_in_turns(jobs, run_trainer)))   # side by side, step by step
            for method, res in done.items():
                per[method].append(_figures(res, calls[method]))
            if r == s["repeats"] - 1:
                res = done["aimmerging"]
                peaks = _flops.peak(res["trainer"].accelerator.device)
                rates = {m: _flops.figures(d["flops"], d["metrics"]["timing_seconds"],
                                           d["metrics"]["counters"], peaks) for m, d in done.items()}
                step = median(f["seconds_per_step"] for f in per["aimmerging"])
                probe = rehearsal_probe(res["trainer"], s["probe_steps"], step)
                if s["probes"]:
                    sweep = history_sweep(res["trainer"], s["draws"], step)
                    sharing = prefix_probe(res["trainer"], s["draws"])
                    noise = signal_noise(res["trainer"])
                used = history_dtype(res["trainer"].cfg.method.history_precision, res["trainer"].model)
            del done
    ratios_each = [_ratios(a, b) for a, b in zip(per["aimmerging"], per["replay"])]
    ratios = {k: median(r[k] for r in ratios_each) for k in ratios_each[0]}
    agg = {m: {k: ([median(x) for x in zip(*(f[k] for f in fs))] if isinstance(fs[0][k], list)
                   else median(f[k] for f in fs)) for k in fs[0]} for m, fs in per.items()}
    aim = agg["aimmerging"]
    targets = {
        "monitor_to_flop_share_ratio": target(ratios["monitor_to_flop_share_ratio"], "<=", 1.10),
        "merge_to_main_ratio": target(ratios["merge_to_main_ratio"], "<=", 0.01),
        "run_to_flop_budget_ratio": target(ratios["run_to_flop_budget_ratio"], "<=", 1.05),
    }
    hb = history_batch_size(_config(s, "aimmerging"))
    draw = _config(s, "aimmerging").method.history_draw
    precision = "bfloat16" if used is not None else "model precision"
    if noise is not None:
        noisy = noise.get("during_last_task", noise["all_tasks"])["sampling_activations"].get(str(hb), {})
        per_step = (f"at fixed parameters a new batch of {hb} every step would activate the forgetting "
                    f"signal by sampling alone on {noisy.get('per_step', math.nan):.1%} of steps and in "
                    f"{noisy.get('activated_merges', math.nan):.0%} of merge intervals")
        sampled = (f"; one batch per merge interval, so sampling alone never activates the forgetting "
                   f"signal ({per_step})" if draw == "interval" else f"; {per_step}")
        shared = (f"; prefix sharing {sharing['first_task']['plain_to_shared_ratio']:.2f}x with one task "
                  f"in memory, {sharing['all_tasks']['plain_to_shared_ratio']:.2f}x with all")
    else:
        sampled = shared = ""          # AIMMERGING_BENCH_OVERHEAD_PROBES=0
    summary = (f"overhead: AIMMerging/LoRAReplay time {ratios['total_time_ratio']:.2f}x (paper ~1.3); "
               f"monitoring {ratios['monitor_to_step_ratio']:.1%} of a main step against a FLOP share of "
               f"{ratios['history_flop_share_ratio']:.1%} ({ratios['monitor_to_flop_share_ratio']:.2f}x "
               f"the limit; memory batch {hb}, {precision}{sampled}{shared}), "
               f"rehearsal {ratios['rehearsal_to_main_ratio']:.1%} ({aim['rehearsal_steps']:.0f} steps, "
               f"{aim['rehearsal_steps_skipped']:.0f} skipped at alpha_past=0; one rehearsal step "
               f"{probe['rehearsal_step_to_main_step_ratio']:.2f}x a main step), merges "
               f"{ratios['merge_to_main_ratio']:.2%} of main-step time; run "
               f"{ratios['run_to_flop_budget_ratio']:.3f}x its FLOPs at LoRAReplay's FLOP/s "
               f"({ratios['run_to_step_budget_ratio']:.3f}x its steps at LoRAReplay's step time); "
               f"main step {_flops.describe(rates['aimmerging'])}; {verdict(targets)}")
    figures = {
        "mode": "quick" if quick else "full", "settings": {**s, "history_batch_size": hb, "history_draw": draw, "history_precision": precision,
                                                         "torch_threads": n_threads},
        "ratios": ratios, "targets": targets, "aimmerging": aim, "replay": agg["replay"],
        "history_batch_sweep": sweep, "signal_noise": noise, "rehearsal_probe": probe,
        "prefix_sharing": sharing,
        "flops": rates,
        "repeats_ratios": ratios_each,
        "summary": summary,
    }
    if any(math.isnan(v) for v in ratios.values()):
        figures["note"] = "some ratios are undefined (no monitored step or no merge)"
    write_result(output, NAME, figures)
    return figures
