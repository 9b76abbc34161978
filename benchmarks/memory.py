"""Memory: peak resident memory of a ``configs/cpu_small.yaml`` run against the Trainer run of item 2.

Each side runs in a process of its own, which reports its peak resident set size
(``VmHWM`` of ``/proc/self/status``) as it exits. (``ru_maxrss``, from ``getrusage`` or
``wait4``, would not do: Linux carries it over ``exec`` from the forked image, so every
child would report at least this process's own resident size.)

- ``aimmerging``: ``python -m aimmerging run configs/cpu_small.yaml`` (AIMMerging, its
  4 tasks, replay memory, rehearsal, merges, evaluation and checkpoints), bounded by
  ``train.max_steps_per_task`` and ``data.n_test`` (quick mode: on tiny-llama);
- ``trainer``: ``python benchmarks/hf_trainer.py`` with the settings of the throughput
  benchmark (transformers' Trainer, PEFT LoRA, same model and batch size).

Target: ratio <= 1.2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import throughput
from ._common import (bench_threads, cpu_small_path, cpu_small_raw, long_sequence_dir, target,
                      verdict, write_result)

NAME = "memory"


def settings(quick: bool) -> dict:
    if quick:
        return {"model": "tiny-llama", "steps_per_task": 10, "n_test": 8, "threads": bench_threads()}
    return {"model": "smollm2-135m",
            "steps_per_task": int(os.environ.get("AIMMERGING_BENCH_MEMORY_STEPS", "10")),
            "n_test": int(os.environ.get("AIMMERGING_BENCH_MEMORY_TESTS", "16")),
            "threads": bench_threads()}


#: run a Python entry point, writing the process's peak RSS (VmHWM, KiB) to argv[1] at exit
LAUNCHER = """
import atexit, runpy, sys
out = sys.argv[1]
def _peak():
    with open('/proc/self/status') as f:
        kib = next(line.split()[1] for line in f if line.startswith('VmHWM:'))
    with open(out, 'w') as f:
        f.write(kib)
atexit.register(_peak)
target = sys.argv[2]
sys.argv = sys.argv[2:]
if target.endswith('.py'):
    runpy.run_path(target, run_name='__main__')
else:
    runpy.run_module(target, run_name='__main__', alter_sys=True)
"""


def measure(target: str, args: list[str], workdir: Path, name: str, env: dict) -> dict:
    """Run ``python -m target args`` (or a script) in a child; exit code, wall time, peak RSS, stdout."""
    peak = workdir / f"{name}.peak"
    log = workdir / f"{name}.log"
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(peak), target, *args],
                              stdout=subprocess.PIPE, stderr=err, env=env, text=True)
    res = {"returncode": proc.returncode, "seconds": time.perf_counter() - t0, "stdout": proc.stdout}
    if proc.returncode != 0 or not peak.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"{target} exited with {proc.returncode}:\n{tail}")
    res["peak_rss_mib"] = int(peak.read_text()) / 1024
    return res


def run(quick: bool, output: Path) -> dict:
    s = settings(quick)
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if s["threads"]:
        env["OMP_NUM_THREADS"] = str(s["threads"])
    raw = cpu_small_raw()
    tp = throughput.settings(quick)
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        tmp = Path(tmp)
        cfg_path = cpu_small_path()
        if cfg_path is None:
            cfg_path = tmp / "cpu_small.yaml"
            cfg_path.write_text(json.dumps(raw), encoding="utf-8")
        ours_args = ["run", str(cfg_path),
                    "--set", f"data.dir={long_sequence_dir()}", "--set", f"model.name={s['model']}",
                    "--set", f"train.max_steps_per_task={s['steps_per_task']}",
                    "--set", f"data.n_test={s['n_test']}", "--output", str(tmp / "run"), "--quiet",
                    "--overwrite"]
        spec = {"model": s["model"], "tasks": tp["tasks"], "data_dir": str(long_sequence_dir()),
                "n_train": tp["steps"] * tp["batch_size"], "steps": tp["steps"],
                "batch_size": tp["batch_size"], "max_input_tokens": raw["data"]["max_input_tokens"],
                "max_target_tokens": raw["data"].get("max_target_tokens", 16),
                "seed": raw.get("seed", 42), "threads": s["threads"]}
        script = str(Path(throughput.__file__).with_name("hf_trainer.py"))
        ours = measure("aimmerging", ours_args, tmp, "aimmerging", env)
        theirs = measure(script, [json.dumps(spec)], tmp, "trainer", env)
        metrics = json.loads((tmp / "run" / "metrics.json").read_text(encoding="utf-8"))
    trainer_figs = json.loads(theirs.pop("stdout").strip().splitlines()[-1])
    ours.pop("stdout")
    ratio = ours["peak_rss_mib"] / theirs["peak_rss_mib"]
    targets = {"peak_rss_ratio": target(ratio, "<=", 1.2)}
    figures = {
        "mode": "quick" if quick else "full",
        "settings": {**s, "config": str(cpu_small_path() or "built-in cpu_small"),
                     "trainer_tasks": tp["tasks"], "trainer_steps": tp["steps"]},
        "peak_rss_ratio": ratio,
        "aimmerging_run": {**ours, "train_steps": metrics.get("counters", {}).get("train_steps"),
                           "merges": metrics.get("counters", {}).get("merges", 0)},
        "trainer_run": {**theirs, "steps": trainer_figs.get("steps")},
        "targets": targets,
        "summary": (f"memory: peak RSS {ours['peak_rss_mib']:.0f} MiB (cpu_small run, {s['model']}) vs "
                    f"{theirs['peak_rss_mib']:.0f} MiB (Trainer+PEFT) = {ratio:.2f}x; "
                    f"{verdict(targets)}"),
    }
    write_result(output, NAME, figures)
    return figures
