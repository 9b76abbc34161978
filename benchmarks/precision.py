"""Precision: ``train.mixed_precision: bf16`` against float32 (``no``) for main steps, speed and loss.

The same ``seq_lora`` training (model, examples, batches in the same order, schedule and
steps; LoRA dropout draws from the same seed) runs once in each precision, each in a
process of its own (Accelerate keeps one mixed-precision setting per process), one after
the other (quick mode: twice, alternating). Per precision: seconds per main step (the
median of the steps after the first, which carries one-time kernel set-up), real tokens per
second, the loss of every step, and the achieved FLOP/s against the float32 matmul peak
measured in the same process (``_flops``). Then, in this process, a matmul of the model's
shapes (:data:`aimmerging.precision.PROBE_TOKENS` rows x hidden size x MLP width) in both
dtypes: the probe that the ``auto`` precisions decide on (:mod:`aimmerging.precision`), and
what ``auto`` resolves to here.

Target ``auto_follows_measurement``: ``auto`` picks bfloat16 here exactly when its main step
measured at least :data:`aimmerging.precision.MIN_SPEEDUP` times as fast as float32's.

``AIMMERGING_BENCH_PRECISION_STEPS`` (full mode, default 3) sets the steps per side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ._common import (FULL_MODEL, QUICK_MODEL, make_config, median, run_trainer, threads, time_calls,
                      write_result)

NAME = "precision"
PRECISIONS = ("no", "bf16")


def settings(quick: bool) -> dict:
    if quick:
        return {"model": QUICK_MODEL, "tasks": ["dbpedia"], "steps": 6, "batch_size": 8, "rounds": 2}
    steps = int(os.environ.get("AIMMERGING_BENCH_PRECISION_STEPS", "3"))
    return {"model": FULL_MODEL, "tasks": ["dbpedia"], "steps": steps, "batch_size": 8, "rounds": 1}


def side(spec: dict) -> dict:
    """One precision's run (in a child process: :func:`run` starts it); returns its figures."""
    from . import _flops

    s, precision = spec["settings"], spec["precision"]
    cfg = make_config([f"model.name={s['model']}", "method.name=seq_lora",
                       f"data.tasks=[{','.join(s['tasks'])}]",
                       f"data.n_train={s['steps'] * s['batch_size']}", "data.n_test=1",
                       "eval.max_new_tokens=1", "train.epochs=1", f"train.batch_size={s['batch_size']}",
                       f"train.max_steps_per_task={s['steps']}", "train.checkpoint_every=0",
                       f"train.mixed_precision={precision}"])
    steps: list = []
    with threads() as n_threads:
        res = run_trainer(cfg, spec["run_dir"], instrument=lambda tr: time_calls(tr, "_optimizer_step", steps))
        tr = res["trainer"]
        peaks = _flops.peak(tr.accelerator.device)
    t, c = res["metrics"]["timing_seconds"], res["metrics"]["counters"]
    steady = steps[1:] or steps
    tokens = sum(len(e.prompt) + len(e.answer) for task in tr.tasks for e in tr.encoder.encode(task.train))
    flops = _flops.figures(res["flops"], t, c, peaks)
    per_step = flops["main"]["flop_per_step"]
    return {"precision": precision, "accelerate_mixed_precision": tr.accelerator.mixed_precision,
            "autocast": bool(tr.accelerator.native_amp), "torch_threads": n_threads,
            "step_seconds": steps, "seconds_per_step": median(steady),
            "first_step_seconds": steps[0] if steps else None,
            "tokens_per_second": tokens / t["train_step_seconds"], "tokens": tokens,
            "losses": [row["train_loss"] for row in tr.writer.traces.signals],
            "flops": {**flops, "steady": _flops.rate(per_step * len(steady), sum(steady), peaks)}}


def _child(spec: dict, env: dict) -> dict:
    code = ("import json, sys\nfrom aimmerging.bench import load_benchmark\n"
            "print(json.dumps(load_benchmark('precision').side(json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"precision {spec['precision']} exited with {proc.returncode}:\n"
                           f"{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def matmul_probe(model: str) -> dict:
    """float32 and bfloat16 rates of the ``auto`` probe's matmul for ``model``, measured now
    (not cached), and what the ``auto`` precisions resolve to on this machine."""
    import torch
    from transformers import AutoConfig

    from aimmerging import precision
    from aimmerging.models import resolve_mixed_precision, resolve_model_path

    shape = precision.probe_shape(AutoConfig.from_pretrained(resolve_model_path(model)))
    with threads():
        rates = {str(dt).replace("torch.", ""): precision.matmul_flops_per_second(dt, *shape, repeats=3)
                 for dt in (torch.float32, torch.bfloat16)}
        native = precision.native_bfloat16("cpu")
        auto_train = resolve_mixed_precision("auto", model)
        auto_history = "bfloat16" if precision.bfloat16_pays("cpu", shape) else "model"
    return {"shape": list(shape), "float32_flop_per_s": rates["float32"],
            "bfloat16_flop_per_s": rates["bfloat16"],
            "bfloat16_speedup_ratio": rates["bfloat16"] / rates["float32"],
            "native_bfloat16": native,
            "auto": {"train.mixed_precision": auto_train,
                     "method.history_precision (a float32 model of >= 50M parameters)": auto_history}}


def run(quick: bool, output: Path) -> dict:
    from aimmerging.bench import find_benchmarks_dir
    from aimmerging.precision import MIN_SPEEDUP

    s = settings(quick)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false",
               AIMMERGING_BENCHMARKS=str(find_benchmarks_dir()))
    sides: dict = {p: [] for p in PRECISIONS}
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as tmp:
        for r in range(s["rounds"]):
            for p in PRECISIONS:
                sides[p].append(_child({"settings": s, "precision": p,
                                        "run_dir": str(Path(tmp) / f"{p}_{r}")}, env))
    probe = matmul_probe(s["model"])
    fp32, bf16 = sides["no"], sides["bf16"]
    step = {p: median(x["seconds_per_step"] for x in v) for p, v in sides.items()}
    speedup = step["no"] / step["bf16"]
    diffs = [abs(a - b) for x, y in zip(fp32, bf16) for a, b in zip(x["losses"], y["losses"])]
    mean_loss = {p: median(sum(x["losses"]) / len(x["losses"]) for x in v) for p, v in sides.items()}
    faster = speedup >= MIN_SPEEDUP
    auto_bf16 = probe["auto"]["train.mixed_precision"] == "bf16"
    targets = {"auto_follows_measurement": {
        "value": probe["auto"]["train.mixed_precision"],
        "target": f"bf16 exactly where a bf16 main step measured >= {MIN_SPEEDUP}x float32's speed",
        "met": auto_bf16 == faster}}
    fraction = {p: median(x["flops"]["steady"].get("fraction_of_float32_peak") for x in v)
                for p, v in sides.items()}
    summary = (f"precision: main step float32 {step['no']:.2f} s vs bf16 autocast {step['bf16']:.2f} s "
               f"= bf16 {speedup:.2f}x float32's speed ({s['model']}, batch {s['batch_size']}); "
               f"mean loss {mean_loss['no']:.4f} vs {mean_loss['bf16']:.4f} (largest step difference "
               f"{max(diffs):.4f}); {fraction['no']:.0%} and {fraction['bf16']:.0%} of the float32 "
               f"matmul peak; the auto probe's matmul {probe['bfloat16_speedup_ratio']:.2f}x in "
               f"bfloat16 (native bfloat16: {str(probe['native_bfloat16']).lower()}); auto picks "
               f"{probe['auto']['train.mixed_precision']}; "
               f"{sum(bool(t['met']) for t in targets.values())}/{len(targets)} targets met")
    figures = {"mode": "quick" if quick else "full", "settings": {**s, "torch_threads": fp32[0]["torch_threads"]},
               "bfloat16_step_speedup_ratio": speedup, "seconds_per_step": step,
               "mean_loss": mean_loss, "max_abs_step_loss_difference": max(diffs),
               "fraction_of_float32_peak": fraction,
               "matmul_probe": probe, "float32": fp32, "bfloat16": bf16,
               "targets": targets, "summary": summary}
    write_result(output, NAME, figures)
    return figures
