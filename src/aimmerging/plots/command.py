"""``aimmerging plot``: every figure of a run folder (:func:`plot_run`) and the CLI parser."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .common import _note, _safe
from .figures import plot_first_task, plot_history_vs, plot_intervals, plot_matrix, plot_signals
from .load import _label_runs, load_run

__all__ = ["plot_run", "cmd_plot", "add_parser"]


# --- everything -------------------------------------------------------------------------------------
def plot_run(run_dir, baseline=None, others: Sequence = ()) -> list[Path]:
    """Write every figure of ``run_dir`` to ``run_dir/figures/``; returns the written paths.

    ``run_dir`` needs ``signals.csv`` and ``merge_trace.csv`` (an AIMMergingCallback's
    ``output_dir`` has only those: its signal figures, no score figures); the score figures
    need ``accuracy_matrix.json`` too. Raises ConfigError naming the folder and file that is
    missing (and the flag, for ``--baseline`` and ``--runs``)."""
    run = load_run(run_dir, need=("signals.csv", "merge_trace.csv"))
    base = _load_flag("--baseline", baseline, ("accuracy_matrix.json", "signals.csv")) \
        if baseline else None
    extra = [_load_flag("--runs", o, ("accuracy_matrix.json",)) for o in others]
    everyone = [run] + ([base] if base else []) + extra
    _label_runs(everyone)
    figs = run.path / "figures"
    written: list[Path] = []
    for stage, task in run.stages():
        if stage < 2:
            continue
        path = figs / f"signals_task{stage:02d}_{_safe(task)}.png"
        p = plot_signals(run, stage, task, path)
        if p is None:
            _note(f"task {stage} ({task}): no history loss and no merge in {run.path}; "
                  f"no signals figure")
            _drop_stale(path)
        else:
            written.append(p)
    if base is not None:
        path = figs / "history_loss_vs_baseline.png"
        p = plot_history_vs(run, base, path)
        if p is not None:
            written.append(p)
        else:
            _drop_stale(path)
    if any(v is not None for row in run.matrix for v in row):
        written.append(plot_first_task(everyone, figs / "first_task.png"))
        written.append(plot_matrix(run, figs / "accuracy_matrix.png"))
    else:
        _note(f"no stage of {run.path} has finished: no score figures")
        for name in ("first_task.png", "accuracy_matrix.png"):
            _drop_stale(figs / name)
    written.append(plot_intervals(run, figs / "intervals.png"))
    return written


def _load_flag(flag: str, folder, need):
    from ..errors import ConfigError

    try:
        return load_run(folder, need=need)
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _drop_stale(path: Path) -> None:
    """Remove a figure an earlier ``plot`` drew that this one does not (it would mislead)."""
    if path.is_file():
        path.unlink()
        _note(f"removed the earlier {path.name}")


def cmd_plot(args) -> int:
    others = [o for o in (args.runs or "").split(",") if o.strip()]
    for p in plot_run(Path(args.run_dir), args.baseline, [o.strip() for o in others]):
        print(p)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("plot", help="draw a run folder's figures into RUN_DIR/figures/")
    p.add_argument("run_dir", help="a run folder (written by aimmerging run or compare)")
    p.add_argument("--baseline", help="a run folder to compare the history loss and task 1 with")
    p.add_argument("--runs", help="more run folders for the first-task figure, comma-separated")
    p.set_defaults(func=cmd_plot)
    return p
