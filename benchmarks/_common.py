"""Shared helpers of the benchmarks: configs, instrumented runs, results files, machine facts."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from ._flops import FlopMeter

REPO = Path(__file__).resolve().parents[1]

#: configs/cpu_small.yaml, used when the file is absent (the issue's definition of cpu_small)
CPU_SMALL = {
    "seed": 42,
    "data": {"dir": "../shared/data/data_longsequence", "order": 1, "n_train": 200, "n_test": 100,
             "max_input_tokens": 128, "max_target_tokens": 16},
    "model": {"name": "smollm2-135m", "lora_r": 8, "lora_alpha": 32, "lora_dropout": 0.05},
    "method": {"name": "aimmerging", "memory_size": 20},
    "train": {"epochs": 3, "batch_size": 8, "lr": 3.0e-4, "checkpoint_every": 25},
    "eval": {"batch_size": 16, "max_new_tokens": 8},
}

#: the model of quick mode: a random two-layer Llama with a byte tokenizer (built locally)
QUICK_MODEL = "tiny-llama"
FULL_MODEL = "smollm2-135m"


def data_root() -> Path:
    """The shared benchmark data: ``$AIMMERGING_BENCH_DATA``, else ``../shared/data`` (of the
    current directory or of the repository), else ``/work/shared/data``."""
    env = os.environ.get("AIMMERGING_BENCH_DATA")
    if env:
        return Path(env)
    for cand in (Path.cwd() / ".." / "shared" / "data", REPO / ".." / "shared" / "data",
                 Path("/work/shared/data")):
        if cand.is_dir():
            return cand.resolve()
    return (REPO / ".." / "shared" / "data").resolve()


def long_sequence_dir() -> Path:
    return data_root() / "data_longsequence"


def cpu_small_path() -> Optional[Path]:
    for base in (Path.cwd(), REPO):
        p = base / "configs" / "cpu_small.yaml"
        if p.is_file():
            return p
    return None


def cpu_small_raw() -> dict:
    """configs/cpu_small.yaml as a dict (the built-in copy when the file is absent)."""
    from aimmerging.config import load_raw

    p = cpu_small_path()
    return load_raw(p) if p is not None else json.loads(json.dumps(CPU_SMALL))


def make_config(overrides: Iterable[str] = (), raw: Optional[dict] = None):
    """cpu_small (or ``raw``) with the data folder made absolute and ``--set``-style overrides."""
    from aimmerging.config import apply_overrides, build_config

    raw = cpu_small_raw() if raw is None else raw
    overrides = list(overrides)
    if any(o.startswith("data.tasks=") for o in overrides):
        overrides = ["data.order=null", *overrides]   # the tasks replace cpu_small's order
    raw = apply_overrides(raw, [f"data.dir={long_sequence_dir()}", *overrides])
    return build_config(raw, "benchmark config")


def quiet() -> None:
    """No progress bars, no log on the terminal, no library notices."""
    from aimmerging.runner import quiet_libraries, setup_logging

    setup_logging(None, verbose=False)
    quiet_libraries()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def run_trainer(cfg, run_dir: Path, tasks: Optional[list] = None, instrument=None) -> dict:
    """Run the real :class:`~aimmerging.loop.ContinualTrainer` and return its figures.

    Returns ``{"trainer", "metrics", "wall_seconds", "stages", "flops"}``; ``stages`` holds the
    timing and counters at the end of each stage (recorded by wrapping the method's
    ``after_task`` hook: nothing of the loop is changed); ``flops`` is the run's
    :class:`~benchmarks._flops.FlopMeter` (stopped when the run ends). ``instrument(trainer)``
    is called before the run, to wrap more hooks.
    """
    import shutil

    from aimmerging.loop import ContinualTrainer
    from aimmerging.runner import load_tasks

    quiet()
    if tasks is None:
        tasks = load_tasks(cfg)
    run_dir = Path(run_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    trainer = ContinualTrainer(cfg, run_dir, tasks, progress=False)
    stages: list[dict] = []
    inner = trainer.method.after_task

    def after_task(stage):
        stages.append({"stage": stage.index + 1, "task": stage.name,
                       "memory_examples": len(trainer.memory),
                       "timing": dict(trainer.timing), "counters": dict(trainer.counters)})
        inner(stage)

    trainer.method.after_task = after_task
    meter = FlopMeter(trainer)         # innermost wrappers: the turns' waits stay outside
    if instrument is not None:
        instrument(trainer)
    t_run = time.perf_counter()
    try:
        metrics = trainer.run()
    finally:
        meter.active = False           # later probes on the trained model are not the run's
    end = time.perf_counter()
    return {"trainer": trainer, "metrics": metrics, "wall_seconds": end - t0,
            "run_seconds": end - t_run, "stages": stages, "flops": meter}


def memory_subset(memory, tasks: list):
    """A :class:`~aimmerging.memory.ReplayMemory` holding ``memory``'s examples of ``tasks`` only."""
    from aimmerging.memory import ReplayMemory

    sub = ReplayMemory(memory_size=max(len(memory.examples([t])) for t in tasks), seed=memory.seed)
    for t in tasks:
        sub.add_task(t, memory.examples([t]))
    return sub


def time_calls(obj, name: str, out: list) -> None:
    """Wrap the method ``obj.name`` (on the instance) so that every call's duration, in
    seconds, is appended to ``out``, errors included."""
    inner = getattr(obj, name)

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            out.append(time.perf_counter() - t0)

    setattr(obj, name, timed)


def median(xs: Iterable[float]) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def rnd(x: Any, nd: int = 4) -> Any:
    """Floats to ``nd`` significant digits, recursively (NaN and inf become None: valid JSON)."""
    if isinstance(x, float):
        return float(f"{x:.{nd}g}") if x == x and abs(x) != float("inf") else None
    if isinstance(x, dict):
        return {k: rnd(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rnd(v, nd) for v in x]
    return x


def target(value: Optional[float], op: str, bound: float) -> dict:
    """A target record: ``{"value", "target", "met"}`` (``op`` is "<=" or ">=")."""
    if value is None or value != value:
        met = None
    else:
        met = bool(value <= bound) if op == "<=" else bool(value >= bound)
    return {"value": rnd(value), "target": f"{op} {bound}", "met": met}


def machine() -> dict:
    """The machine the figures were measured on (:func:`aimmerging.machine.machine`) and its load."""
    from aimmerging.machine import machine as facts

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {**facts(), "load_average_1min_when_written": load}


def write_result(output: Path, name: str, figures: dict) -> dict:
    """Write ``output/<name>.json`` (figures plus the machine) and return the figures."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    figures = {"benchmark": name, **figures}
    figures.setdefault("machine", machine())
    settings = figures.get("settings", {})
    used = settings.get("torch_threads", settings.get("threads"))
    if used:        # the count the benchmark ran at, not the count restored after it
        figures["machine"]["torch_threads"] = used
    (output / f"{name}.json").write_text(json.dumps(rnd(figures), indent=2) + "\n", encoding="utf-8")
    return figures


def verdict(targets: dict) -> str:
    """``3/4 targets met`` for a dict of :func:`target` records."""
    known = [t["met"] for t in targets.values() if t["met"] is not None]
    return f"{sum(known)}/{len(targets)} targets met"


class threads:
    """Context manager: torch intra-op threads (default 1; ``$AIMMERGING_BENCH_THREADS``).

    One thread by default, in both modes: on a machine whose cores other jobs share,
    torch's default OpenMP threads wait for each other at every operation (measured
    here on 2 busy cores: 7 ms per element-wise op, a SmolLM2 prefill of 16x128 tokens
    17.5 s with 2 threads against 7.5 s with 1), which swamps the work being compared.
    ``AIMMERGING_BENCH_THREADS=0`` keeps torch's default; ``n`` sets the count regardless.
    """

    def __init__(self, quick: bool = True, n: Optional[int] = None):
        env = os.environ.get("AIMMERGING_BENCH_THREADS", "1")
        self.n = n if n is not None else (int(env) if env.strip() else 1)

    def __enter__(self):
        import torch

        self.saved = torch.get_num_threads()
        if self.n > 0:
            torch.set_num_threads(self.n)
        return torch.get_num_threads()

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.saved)
        return False


def bench_threads() -> int:
    """The thread count the benchmarks use (0: torch's default)."""
    return threads().n
