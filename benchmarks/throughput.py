"""Training throughput: our ``seq_lora`` loop against transformers' ``Trainer`` on a PEFT LoRA model.

Both sides train the same LoRA adapter on the same model, examples, tokenisation,
batch size, schedule and number of steps, in the same batch order (see
``hf_trainer.py``), in this process, alternately when repeated. Throughput is real
(non-padding) tokens per second of training time: our loop's ``train_seconds``
(the task's steps and their hooks) against ``Trainer``'s ``train_runtime``.
In-task checkpoints are off on our side (``train.checkpoint_every=0``), as
``save_strategy="no"`` is on Trainer's. Target: ratio >= 1.0.

After the first run of our loop, one more main step runs under torch's profiler
(``main_step_profile``, ``_profile.py``): where the step's time goes, by operator group.

For information, our loop also runs with ``train.share_prefix=true`` (each batch's shared
task instruction run once, ``aimmerging.prefix``): ``shared_prefix_throughput_ratio``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from . import _flops, hf_trainer
from ._common import (FULL_MODEL, QUICK_MODEL, long_sequence_dir, make_config, median, run_trainer,
                      target, threads, verdict, write_result)

NAME = "throughput"


def settings(quick: bool) -> dict:
    if quick:
        return {"model": QUICK_MODEL, "tasks": ["dbpedia"], "steps": 30, "batch_size": 8,
                "repeats": 4}
    steps = int(os.environ.get("AIMMERGING_BENCH_THROUGHPUT_STEPS", "16"))
    return {"model": FULL_MODEL, "tasks": ["dbpedia"], "steps": steps, "batch_size": 8, "repeats": 1}


def _ours(s: dict, run_dir: Path, share_prefix: bool = False, profile: bool = False) -> dict:
    cfg = make_config([f"train.share_prefix={str(share_prefix).lower()}", f"model.name={s['model']}", "method.name=seq_lora",
                       f"data.tasks=[{','.join(s['tasks'])}]",
                       f"data.n_train={s['steps'] * s['batch_size']}",
                       "data.n_test=1", "eval.max_new_tokens=1", "train.epochs=1",
                       f"train.batch_size={s['batch_size']}", f"train.max_steps_per_task={s['steps']}",
                       "train.checkpoint_every=0"])
    res = run_trainer(cfg, run_dir)
    tr = res["trainer"]
    tokens = sum(len(e.prompt) + len(e.answer) for t in tr.tasks for e in tr.encoder.encode(t.train))
    signals = tr.writer.traces.signals
    extra = {}
    if profile:      # one more step, after the run: where a main step's time goes (_profile.py)
        from ._profile import step_profile

        extra["profile"] = step_profile(tr, tr.tasks[0].train[:s["batch_size"]])
    return {**extra, "train_seconds": res["metrics"]["timing_seconds"]["train_seconds"], "tokens": tokens,
            "train_step_seconds": res["metrics"]["timing_seconds"]["train_step_seconds"],
            "flop": res["flops"].flop.get("main", 0.0),
            "steps": res["metrics"]["counters"]["train_steps"],
            "mean_loss": sum(r["train_loss"] for r in signals) / len(signals) if signals else None,
            "cfg": cfg}


def _theirs(s: dict, cfg) -> dict:
    d = cfg.data
    return hf_trainer.run_trainer({
        "model": s["model"], "tasks": s["tasks"], "data_dir": str(long_sequence_dir()),
        "n_train": d.n_train, "steps": s["steps"], "batch_size": s["batch_size"],
        "max_input_tokens": d.max_input_tokens, "max_target_tokens": d.max_target_tokens,
        "seed": cfg.seed, "lr": cfg.train.lr})


def run(quick: bool, output: Path) -> dict:
    with threads(quick) as n_threads:
        s = settings(quick)
        ours, theirs, shared, profiled = [], [], [], None
        with tempfile.TemporaryDirectory(prefix="bench_throughput_") as tmp:
            for r in range(s["repeats"]):
                o = _ours(s, Path(tmp) / f"ours_{r}", profile=r == 0)
                cfg = o.pop("cfg")
                profiled = o.pop("profile", None) or profiled
                t = _theirs(s, cfg)
                p = _ours(s, Path(tmp) / f"shared_{r}", share_prefix=True)
                p.pop("cfg")
                for side in (o, p):
                    side["tokens_per_second"] = side["tokens"] / side["train_seconds"]
                t["tokens_per_second"] = t["tokens"] / t["train_runtime"]
                ours.append(o)
                theirs.append(t)
                shared.append(p)
    ratios = [o["tokens_per_second"] / t["tokens_per_second"] for o, t in zip(ours, theirs)]
    ratio = median(ratios)
    same_tokens = all(o["tokens"] == t["tokens"] for o, t in zip(ours, theirs))
    targets = {"throughput_ratio": target(ratio, ">=", 1.0)}
    o_tps = median(o["tokens_per_second"] for o in ours)
    t_tps = median(t["tokens_per_second"] for t in theirs)
    p_tps = median(p["tokens_per_second"] for p in shared)
    shared_ratio = median(p["tokens_per_second"] / t["tokens_per_second"]
                          for p, t in zip(shared, theirs))
    # FLOP/s: the same batches on both sides, so the same useful FLOPs (benchmarks/_flops.py);
    # the shared-prefix runs skip work, so their FLOPs are not counted
    peaks = _flops.peak()
    flop = median(o["flop"] for o in ours)
    flops = {"peak": peaks,
             "main": _flops.rate(flop, median(o["train_step_seconds"] for o in ours), peaks, s["steps"]),
             "ours_training": _flops.rate(flop, median(o["train_seconds"] for o in ours), peaks),
             "trainer_training": _flops.rate(flop, median(t["train_runtime"] for t in theirs), peaks)}
    summary = (f"throughput: seq_lora loop {o_tps:.0f} tokens/s vs Trainer+PEFT {t_tps:.0f} tokens/s "
               f"= {ratio:.2f}x ({s['steps']} steps of batch {s['batch_size']}, {s['model']}); "
               f"with train.share_prefix {p_tps:.0f} tokens/s = {shared_ratio:.2f}x; main step "
               f"{_flops.describe(flops)} (Trainer's training "
               f"{flops['trainer_training']['flop_per_s'] / 1e9:.1f} GFLOP/s); {verdict(targets)}")
    figures = {"mode": "quick" if quick else "full", "settings": {**s, "torch_threads": n_threads},
               "throughput_ratio": ratio, "repeats_throughput_ratios": ratios,
               "ours_tokens_per_second": o_tps, "trainer_tokens_per_second": t_tps,
               "same_tokens_both_sides": same_tokens, "ours": ours, "trainer": theirs,
               "shared_prefix_throughput_ratio": shared_ratio,
               "ours_shared_prefix_tokens_per_second": p_tps, "ours_shared_prefix": shared,
               "flops": flops, "main_step_profile": profiled,
               "targets": targets, "summary": summary}
    write_result(output, NAME, figures)
    return figures
