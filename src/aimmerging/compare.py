"""Run several methods on one config and tabulate OP / FWT / BWT / training time.

::

    aimmerging compare CONFIG [--methods m1,m2,...] [--set key=value ...] [--output DIR] [--no-fwt]

Without ``--methods`` it runs :data:`DEFAULT_METHODS`; without ``--output`` it writes to
``runs/<config>_compare``.

(with ``--seeds 42,43,44``, ``--from`` or ``--collect``: :mod:`aimmerging.multiseed`)

Layout of ``DIR``::

    DIR/single_task/        a0 of every task (FWT), run first unless --no-fwt
    DIR/<method>/           one run folder per method (see aimmerging.results)
    DIR/comparison.csv      one row per method: method,OP,FWT,BWT,train_seconds,merges,effective_merges
    DIR/comparison.json     {"config", "overrides", "seed", "tasks", "model", "single_task_scores", "rows"}
    DIR/comparison.md       the table in the style of the paper's table 2 (+ table 6's time column)

A method whose folder already holds ``metrics.json`` is not run again; a folder with a
checkpoint but no ``metrics.json`` is resumed. A folder whose run used other settings (save
those a resume may change: ``rundir.RESUME_MAY_CHANGE``) is refused before anything runs. Every method except ``single_task``
also logs the history loss (``method.log_history_loss=true``, which a ``--set`` can
turn off) so that ``aimmerging plot --baseline`` can compare forgetting; the time
spent measuring it is subtracted from ``train_seconds`` of the methods that do not
use it.
"""

from __future__ import annotations

import argparse
import gc
import sys
import types
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from .config import (METHOD_NAMES, apply_overrides, build_config, load_raw,
                     split_config_argument)
from .errors import ConfigError, did_you_mean
from .compare_report import COLUMNS, markdown_table, matrix_markdown, write_comparison  # noqa: F401
from .compare_report import read_json as _read_json
from .data.location import add_data_arg, locate_data
from .threads import add_threads_arg, apply_threads

#: methods whose algorithm watches the history loss (their monitoring time is real cost)
MONITORING_METHODS = ("aimmerging", "aimmerging_no_ls", "aimmerging_mgm", "aimmerging_ifm",
                      "aimmerging_reference")
#: row order of :func:`collect_table` without ``methods``: baselines, then AIMMerging, as in table 2
DISPLAY_ORDER = ("seq_lora", "inc_lora", "replay", "ewc", "moe_lora", "o_lora", "single_merge",
                 "fixed_interval", "recurrent_kif", "aimmerging",
                 "aimmerging_no_ls", "aimmerging_no_fs", "aimmerging_mgm", "aimmerging_ifm",
                 "aimmerging_reference", "mtl", "single_task")
SINGLE = "single_task"
#: what ``compare`` runs without ``--methods``: the study's main methods (docs/results.md),
#: the baselines AIMMerging is built from first, with ``replay``, the default reference
DEFAULT_METHODS = ("seq_lora", "replay", "fixed_interval", "recurrent_kif", "aimmerging",
                   "aimmerging_reference")

__all__ = ["compare_runs", "collect_table", "table_row", "write_comparison", "markdown_table",
           "matrix_markdown", "COLUMNS", "add_parser"]


def _say(msg: str, progress: bool = True) -> None:
    if progress:
        print(f"compare: {msg}", file=sys.stderr, flush=True)


def parse_methods(methods: Iterable[str] | str) -> list[str]:
    """Method names (comma list or sequence), duplicates dropped; ConfigError for unknown ones."""
    if isinstance(methods, str):
        methods = methods.split(",")
    names: list[str] = []
    for m in methods:
        m = m.strip()
        if m and m not in names:
            names.append(m)
    if not names:
        raise ConfigError(f"--methods: give at least one method; known: {', '.join(METHOD_NAMES)}")
    unknown = [m for m in names if m not in METHOD_NAMES]
    if unknown:
        hints = "".join(did_you_mean(m, METHOD_NAMES) for m in unknown[:1])
        raise ConfigError(f"--methods: unknown method{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(unknown)}{hints}; known: {', '.join(METHOD_NAMES)}")
    return names


def _config_for(raw: dict, source: str, method: str, overrides: Sequence[str],
                a0: Optional[dict]):
    pre = [] if method == SINGLE else ["method.log_history_loss=true"]
    data = apply_overrides(raw, pre + list(overrides) + [f"method.name={method}"])
    if a0 is not None and method != SINGLE:
        data["single_task_scores"] = dict(a0)
    return build_config(data, source, overrides)


def _run_one(cfg, run_dir: Path, progress: bool) -> dict:
    """Run (or reuse, or resume) one method into ``run_dir``; returns its metrics."""
    from .rundir import holds_run
    from .runner import run

    metrics_path = run_dir / "metrics.json"
    name = cfg.method.name
    if metrics_path.is_file():
        _say(f"{name}: reusing the finished run in {run_dir}", progress)
        return _read_json(metrics_path)
    resume = holds_run(run_dir)
    _say(f"{name}: {'resuming' if resume else 'running'} into {run_dir}", progress)
    metrics = run(cfg, run_dir, resume=resume, overwrite=False, progress=progress)
    _free_memory()
    return metrics


def _check_same_config(cfg, run_dir: Path) -> None:
    """Raise ConfigError when the run folder's config differs from ``cfg`` in a key that
    changes training: its results would be tabulated under settings it did not run with.

    Keys a resume may change (logging, FWT's a0 scores: ``rundir.RESUME_MAY_CHANGE``) are ignored.
    """
    from .rundir import config_differences, saved_config, set_items, set_value

    old = saved_config(run_dir)
    diffs = [] if old is None else config_differences(old, cfg)
    if diffs:
        found = ", ".join(f"{key}={set_value(then)}, not {set_value(now)}" for key, then, now in diffs)
        raise ConfigError(f"{run_dir / 'config.yaml'} has {found} as asked: its results would be "
                          f"tabulated under settings it did not run with; nothing was run: --set "
                          f"{set_items(diffs)} tabulates it as it ran; or remove {run_dir} to run it "
                          f"again, or use another --output")


def _check_resumable(cfg, run_dir: Path) -> None:
    """The checks ``aimmerging run`` makes of its folder (:func:`~aimmerging.rundir.check_run_dir`)
    for a method folder compare will resume or write into, before anything runs."""
    from .rundir import check_run_dir, holds_run

    if (run_dir / "metrics.json").is_file() or not run_dir.exists():
        return
    try:
        check_run_dir(run_dir, cfg, resume=holds_run(run_dir), overwrite=False)
    except ConfigError as exc:
        why = str(exc).removeprefix("--resume: ").split("; nothing was changed")[0]
        raise ConfigError(f"{run_dir} cannot be resumed: {why}; nothing was run: remove the "
                          f"folder to run it again, or use another --output") from None


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def comparison_folder(output) -> Path:
    """``--output`` as a Path; ConfigError when it is not given or is not a folder."""
    if output is None:
        raise ConfigError("--output: give the folder of the comparison")
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output: {out} is not a folder")
    return out


def compare_runs(config_path, methods, overrides: Sequence[str] = (), output=None,
                 fwt: bool = True, progress: bool = True, data: Optional[str] = None) -> list[dict]:
    """Run every method of ``methods`` on the config into ``output/<method>/`` and write the table.

    Everything is checked before any training: the method names, the config with every
    method's overrides. ``data`` is ``--data DIR`` (:func:`~aimmerging.data.location.locate_data`).
    Returns the rows (see :func:`table_row`); the files ``comparison.csv``/``.json``/``.md``
    are written to ``output``.
    """
    names = parse_methods(methods)
    out = comparison_folder(output)
    overrides = list(overrides or [])
    raw = locate_data(load_raw(config_path), overrides, data)
    source = str(config_path)
    for m in dict.fromkeys(([SINGLE] if fwt else []) + names):   # fail before any compute
        cfg = _config_for(raw, source, m, overrides, {} if fwt else None)
        _check_same_config(cfg, out / m)
        _check_resumable(cfg, out / m)
    from .runner import data_folder

    data_folder(cfg)                 # a missing benchmark folder: how to give it (--data DIR)
    out.mkdir(parents=True, exist_ok=True)

    a0 = None
    if fwt:
        single = _run_one(_config_for(raw, source, SINGLE, overrides, None), out / SINGLE, progress)
        a0 = {t: v for t, v in (single.get("single_task_scores") or {}).items() if v is not None}
    for m in names:
        if m != SINGLE:
            _run_one(_config_for(raw, source, m, overrides, a0), out / m, progress)
        elif not fwt:
            _run_one(_config_for(raw, source, SINGLE, overrides, None), out / SINGLE, progress)
    rows = collect_table(out, names)
    cfg = _config_for(raw, source, names[0], overrides, a0)
    meta = {"config": source, "overrides": overrides, "seed": cfg.seed,
            "tasks": _tasks_of(out, names), "model": cfg.model.name, "single_task_scores": a0}
    paths = write_comparison(out, rows, meta)
    _say("wrote " + ", ".join(str(p) for p in paths), progress)
    return rows


def _tasks_of(out: Path, names: Sequence[str]) -> list[str]:
    for m in names:
        p = out / m / "metrics.json"
        if p.is_file():
            return list(_read_json(p).get("tasks") or [])
    return []


def _fwt_from(metrics: dict, a0: Optional[dict]) -> Optional[float]:
    """FWT from metrics.json, or computed from its matrix and ``a0`` when the run had none."""
    if metrics.get("fwt") is not None:
        return float(metrics["fwt"])
    tasks, rows = metrics.get("tasks") or [], metrics.get("accuracy_matrix") or []
    if not a0 or not tasks or len(rows) != len(tasks) or metrics.get("method") == SINGLE:
        return None
    diffs = []
    for i, t in enumerate(tasks):
        if a0.get(t) is None or rows[i][i] is None:
            return None
        diffs.append(rows[i][i] - a0[t])
    return sum(diffs) / len(diffs)


def table_row(run_dir, a0: Optional[dict] = None) -> dict:
    """One table row from a finished run folder (``run_dir/metrics.json``).

    ``train_seconds`` is the training loops' wall time (monitoring, rehearsal and merges
    included), less the history-loss monitoring of methods that do not use it. It is at
    least the sum of the timed parts (main steps, monitoring, rehearsal, merges), which
    every checkpoint keeps (runs resumed before the loop's clock was checkpointed step by
    step counted only the part of the interrupted stage after the resume).
    """
    run_dir = Path(run_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no metrics.json (the run has not finished)")
    m = _read_json(path)
    method = m.get("method") or run_dir.name
    timing = m.get("timing_seconds") or {}
    parts = sum(float(timing.get(k) or 0.0) for k in
                ("train_step_seconds", "monitor_seconds", "rehearsal_seconds", "merge_seconds"))
    train = max(float(timing.get("train_seconds") or 0.0), parts)
    if method not in MONITORING_METHODS:
        train -= float(timing.get("monitor_seconds") or 0.0)
    effective = m.get("effective_merges")
    if effective is None:
        from .traces import as_float, read_csv_rows

        effective = sum(1 for r in read_csv_rows(run_dir / "merge_trace.csv")
                        if (as_float(r.get("alpha_past")) or 0.0) > 0)
    return {"method": method, "OP": _num(m.get("op")), "FWT": _num(_fwt_from(m, a0)),
            "BWT": _num(m.get("bwt")), "train_seconds": round(max(train, 0.0), 3),
            "merges": int(m.get("merges") or 0), "effective_merges": int(effective)}


def _num(v: Any) -> Optional[float]:
    return None if v is None else round(float(v), 4)


def collect_table(directory, methods: Optional[Sequence[str]] = None) -> list[dict]:
    """Rebuild the comparison rows from the run folders in ``directory``.

    ``methods`` None: every sub-folder holding ``metrics.json`` except ``single_task``
    (which gives the a0 of FWT), in the order of :data:`DISPLAY_ORDER`. Runs that were
    made without single-task scores get their FWT from ``single_task/metrics.json``.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: not a folder")
    if methods is None:
        found = [p.name for p in d.iterdir() if (p / "metrics.json").is_file() and p.name != SINGLE]
        order = {n: i for i, n in enumerate(DISPLAY_ORDER)}
        methods = sorted(found, key=lambda n: (order.get(n, len(order)), n))
    single = d / SINGLE / "metrics.json"
    a0 = _read_json(single).get("single_task_scores") if single.is_file() else None
    return [table_row(d / m, a0) for m in methods]


# --- command line ------------------------------------------------------------------------
def cmd_compare(args) -> int:
    from .multiseed import cmd_multiseed, default_methods, default_output

    apply_threads(args)
    if args.seeds is not None or args.from_dir is not None:
        return cmd_multiseed(args)
    if args.reference or args.bootstrap or args.collect:
        raise ConfigError("--reference, --bootstrap and --collect apply with --seeds or --from")
    args.config, args.overrides = split_config_argument(args.config, args.overrides)
    default_methods(args)
    default_output(args, seeds=False)
    rows = compare_runs(args.config, args.methods, args.overrides, args.output,
                        fwt=not args.no_fwt, progress=not args.quiet, data=args.data)
    md = Path(args.output) / "comparison.md"
    print(md.read_text(encoding="utf-8") if md.is_file() else rows)
    print(f"comparison: {Path(args.output) / 'comparison.csv'}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="run several methods on one config and tabulate them")
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    p.add_argument("--methods",
                   help=f"comma-separated method names ({', '.join(METHOD_NAMES)}; "
                        f"default: {','.join(DEFAULT_METHODS)})")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                   metavar="KEY=VALUE",
                   help="override config values for every method, e.g. --set train.epochs=1 "
                        "data.n_train=16 (repeatable)")
    p.add_argument("--output", help="comparison folder, one run folder per method (default: "
                                    "runs/<config>_compare; with --seeds runs/<config>_seeds)")
    add_data_arg(p)
    p.add_argument("--no-fwt", action="store_true",
                   help="do not run single_task first (no a0, so no FWT)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log on the terminal")
    add_threads_arg(p)
    from .multiseed import add_seed_args

    add_seed_args(p)
    p.set_defaults(func=cmd_compare, parser=p)
    return p


class _CallableModule(types.ModuleType):
    """This module is the package's ``aimmerging.compare``: calling it runs
    :func:`aimmerging.api.compare` (a thin wrapper over :func:`compare_runs`)."""

    def __call__(self, *args, **kwargs):
        from .api import compare

        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
