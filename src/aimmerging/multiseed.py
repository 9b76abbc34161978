"""``aimmerging compare`` over several seeds, its tables recomputed from run folders, and the
copy of a study's small files for the repository.

::

    aimmerging compare CONFIG [--methods m1,m2] --seeds 42,43,44 [--reference replay]
                       [--bootstrap N] [--set ...] --output DIR [--no-fwt]
    aimmerging compare --from DIR [--methods ...] [--seeds ...] [--reference replay] [--output OUT]
    aimmerging compare --from DIR --collect DEST [--methods ...] [--seeds ...]

Layout: ``DIR/<method>/seed<S>/`` holds the run of ``method`` with ``seed=S`` (the config
with ``--set ... seed=S``, made as ``aimmerging compare`` makes a one-seed run, so that
``scripts/cpu_small_study.sh``'s runs are reused); ``DIR/single_task/seed<S>/`` gives seed S's
a0 (FWT). Finished runs are reused, unfinished ones resumed; every folder is checked before
anything trains. ``--from`` runs nothing: it tabulates the runs found (a partial study too:
the missing runs are listed). ``--collect`` first copies :data:`COLLECTED` of every finished
run of ``DIR`` into ``DEST/<method>/seed<S>/`` and tabulates ``DEST``. The tables:
:mod:`aimmerging.multiseed_report`; the statistics: :mod:`aimmerging.stats`.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Optional, Sequence

from .compare import (DISPLAY_ORDER, SINGLE, _check_resumable, _check_same_config, _config_for,
                      _read_json, _run_one, _say, comparison_folder, parse_methods)
from .config import load_raw, split_config_argument
from .errors import ConfigError, missing_folder
from .io import atomic_write_text
from .multiseed_report import summarize, write_report
from .stats import BOOTSTRAP_DRAWS

__all__ = ["COLLECTED", "parse_seeds", "find_runs", "compare_seeds", "tabulate",
           "check_same_settings", "collect_results", "add_seed_args", "cmd_multiseed"]

#: the files of a run that ``--collect`` copies: what the tables are computed from, and
#: ``signals.csv`` (docs/results.md's threshold peaks) and ``accuracy_matrix.json``, with
#: which ``aimmerging plot`` draws a collected run's figures
COLLECTED = ("config.yaml", "metrics.json", "accuracy_matrix.csv", "merge_trace.csv",
             "example_scores.csv", "signals.csv", "accuracy_matrix.json")
_SEED = re.compile(r"seed(\d+)")


def parse_seeds(seeds) -> list[int]:
    """Seeds from ``"42,43,44"`` or a sequence, duplicates dropped, in order; ConfigError
    for an empty list or an item that is not a whole number >= 0."""
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if not text.isdigit():
            raise ConfigError(f"--seeds: {text!r} is not a whole number >= 0 (e.g. --seeds 42,43,44)")
        if int(text) not in out:
            out.append(int(text))
    if not out:
        raise ConfigError("--seeds: give at least one seed, e.g. --seeds 42,43,44")
    return out


def run_folder(directory, method: str, seed: int) -> Path:
    """``directory/<method>/seed<S>``: where a comparison over seeds keeps a run."""
    return Path(directory) / method / f"seed{seed}"


def choose_reference(methods: Sequence[str], reference: Optional[str]) -> str:
    """``reference`` when it is one of ``methods`` (else ConfigError); without it ``replay``
    when compared, else the first method."""
    if reference is None:
        return "replay" if "replay" in methods else methods[0]
    if reference not in methods:
        raise ConfigError(f"--reference: {reference} is not among the methods compared "
                          f"({', '.join(methods)})")
    return reference


def find_runs(directory) -> tuple[dict, dict]:
    """``(finished, unfinished)``: ``{method: {seed: folder}}`` of the run folders
    ``directory/<method>/seed<S>/``, finished when they hold ``metrics.json``."""
    from .rundir import holds_run

    finished: dict = {}
    started: dict = {}
    for m in sorted(p for p in Path(directory).iterdir() if p.is_dir()):
        for q in sorted(m.iterdir()):
            match = _SEED.fullmatch(q.name)
            if not (match and q.is_dir()):
                continue
            if (q / "metrics.json").is_file():
                finished.setdefault(m.name, {})[int(match.group(1))] = q
            elif holds_run(q):
                started.setdefault(m.name, {})[int(match.group(1))] = q
    return finished, started


def _check_layout(directory: Path, method: str) -> None:
    from .rundir import holds_run

    if holds_run(directory / method):
        raise ConfigError(f"{directory / method} holds a one-seed run (the layout of compare "
                          f"without --seeds); nothing was run: use another --output for the "
                          f"comparison over seeds")


def compare_seeds(config_path, methods, seeds, overrides: Sequence[str] = (), output=None,
                  fwt: bool = True, reference: Optional[str] = None,
                  draws: int = BOOTSTRAP_DRAWS, progress: bool = True,
                  data: Optional[str] = None) -> dict:
    """Run every method (and ``single_task`` first, for FWT, unless not ``fwt``) at every seed
    into ``output/<method>/seed<S>/`` and write the tables (:func:`tabulate`).

    Seed by seed: seed S's single_task, then its methods. Everything is checked before any
    training: the names, the seeds, every run's config, every folder to reuse or resume.
    ``data`` is ``--data DIR`` (:func:`~aimmerging.data.location.locate_data`).
    Returns the summary (:func:`aimmerging.multiseed_report.summarize`).
    """
    from .data.location import locate_data

    names, seeds = parse_methods(methods), parse_seeds(seeds)
    ref = choose_reference(names, reference)
    out = comparison_folder(output)
    overrides = list(overrides or [])
    if any(o.split("=", 1)[0].strip() == "seed" for o in overrides):
        raise ConfigError("--set seed=...: --seeds gives each run's seed")
    raw, source = locate_data(load_raw(config_path), overrides, data), str(config_path)
    everyone = list(dict.fromkeys(([SINGLE] if fwt else []) + names))
    for m in everyone:                                    # fail before any compute
        _check_layout(out, m)
        for s in seeds:
            cfg = _config_for(raw, source, m, overrides + [f"seed={s}"], {} if fwt else None)
            _check_same_config(cfg, run_folder(out, m, s))
            _check_resumable(cfg, run_folder(out, m, s))
    if cfg.data.dir is not None and not Path(cfg.data.dir).is_dir():
        from .data.location import missing_data_message

        raise ConfigError(missing_data_message(cfg.data.dir))
    out.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        seed_sets = overrides + [f"seed={s}"]
        a0 = None
        if fwt:
            single = _run_one(_config_for(raw, source, SINGLE, seed_sets, None),
                              run_folder(out, SINGLE, s), progress)
            a0 = {t: v for t, v in (single.get("single_task_scores") or {}).items() if v is not None}
        for m in everyone:
            if not (m == SINGLE and fwt):
                _run_one(_config_for(raw, source, m, seed_sets, a0), run_folder(out, m, s), progress)
    meta = {"config": source, "overrides": overrides, "title": Path(source).name,
            "model": cfg.model.name}
    return tabulate(out, names, seeds, ref, draws, meta=meta, fwt=fwt, progress=progress)


def tabulate(directory, methods=None, seeds=None, reference: Optional[str] = None,
             draws: int = BOOTSTRAP_DRAWS, output=None, meta: Optional[dict] = None,
             fwt: Optional[bool] = None, progress: bool = True) -> dict:
    """Write the comparison files of the run folders in ``directory`` into ``output``
    (default: ``directory``), running nothing; returns the summary.

    ``methods`` None: every method folder found except single_task, in the order of the
    one-seed table; ``seeds`` None: every seed found. A run absent or unfinished is listed as
    missing; means and intervals are over the seeds present. ``fwt`` None: single_task runs
    are expected when any is there or ``seeds`` is given; a study's full grid, given as
    ``methods`` and ``seeds``, lists the runs not made yet as missing. Without ``meta`` (as ``--from``), the files name
    the command that recomputes them.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"--from: {missing_folder(d)} is not a folder")
    asked = (methods is not None, seeds is not None)     # named in the command that recomputes
    finished, started = find_runs(d)
    found = set(finished) | set(started)
    if methods is None:
        order = {n: i for i, n in enumerate(DISPLAY_ORDER)}
        methods = sorted((m for m in found if m != SINGLE), key=lambda n: (order.get(n, len(order)), n))
        if not methods:
            raise ConfigError(f"{d} holds no run folder <method>/seed<S>/ (written by aimmerging "
                              f"compare --seeds, or scripts/cpu_small_study.sh)")
    try:
        methods = parse_methods(methods)
    except ConfigError as exc:
        if asked[0]:
            raise
        raise ConfigError(f"{d}: a folder is named after no method ({exc}); rename or move it, "
                          f"or name the methods to tabulate with --methods") from None
    if seeds is None:
        seeds = sorted({s for m in methods + [SINGLE] for s in
                        list(finished.get(m, {})) + list(started.get(m, {}))})
        if not seeds:
            raise ConfigError(f"{d}: no run of {', '.join(methods)} in a seed<S>/ folder")
    seeds = parse_seeds(seeds)
    ref = choose_reference(methods, reference)
    expect_single = (SINGLE in found or asked[1]) if fwt is None else fwt     # FWT's a0
    grid = list(dict.fromkeys(methods + ([SINGLE] if expect_single else [])))
    missing = [{"method": m, "seed": s, "why": "not finished" if s in started.get(m, {}) else "absent"}
               for m in grid for s in seeds if s not in finished.get(m, {})]
    runs = {m: {s: f for s, f in finished.get(m, {}).items() if s in seeds} for m in grid}
    check_same_settings(runs)
    summary = summarize(runs, methods, seeds, ref, draws, missing)
    if meta is None:
        command = ["aimmerging", "compare", "--from", str(d), "--reference", ref]
        if asked[0]:
            command += ["--methods", ",".join(methods)]
        if asked[1]:
            command += ["--seeds", ",".join(map(str, seeds))]
        if draws != BOOTSTRAP_DRAWS:
            command += ["--bootstrap", str(draws)]
        if output is not None and Path(output) != d:
            command += ["--output", str(output)]
        meta = {"from": str(d), "command": shlex.join(command), "title": d.name,
                "model": _model_of(finished)}
    paths = write_report(Path(output) if output is not None else d, summary, meta)
    _say("wrote " + ", ".join(str(p) for p in paths), progress)
    return summary


def check_same_settings(runs: dict) -> None:
    """Raise ConfigError when two runs of ``{method: {seed: folder}}`` were made with other
    settings than their seed and method (``config.yaml``; ``data.dir`` and the keys a resume
    may change, ``rundir.RESUME_MAY_CHANGE``, aside): their table would compare unlike runs."""
    from .config import apply_overrides, build_config
    from .rundir import as_it_ran, config_differences, saved_config, set_value

    first = None
    for m, by_seed in runs.items():
        for s, folder in sorted(by_seed.items()):
            saved = saved_config(Path(folder))
            if not isinstance(saved, dict):
                raise ConfigError(f"{Path(folder) / 'config.yaml'}: absent or not a mapping; the "
                                  f"run's settings cannot be checked")
            if first is None:
                first = (folder, saved)
                continue
            cfg = build_config(apply_overrides(as_it_ran(first[1]), [f"seed={s}", f"method.name={m}"]),
                               str(Path(first[0]) / "config.yaml"))
            diffs = [d for d in config_differences(saved, cfg) if d[0] != "data.dir"]   # where, not what
            if diffs:
                found = ", ".join(f"{k}={set_value(a)}, not {set_value(b)}" for k, a, b in diffs)
                raise ConfigError(f"{Path(folder) / 'config.yaml'} has {found} as "
                                  f"{Path(first[0]) / 'config.yaml'}: runs of other settings than "
                                  f"their seed and method cannot be compared in one table")


def _model_of(finished: dict) -> Optional[str]:
    """The model name in the first finished run's config.yaml."""
    from .rundir import saved_config

    for by_seed in finished.values():
        for folder in by_seed.values():
            cfg = saved_config(Path(folder))
            if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
                return cfg["model"].get("name")
    return None


def collect_results(source, dest, methods=None, seeds=None, progress: bool = True) -> list[Path]:
    """Copy :data:`COLLECTED` of every finished run ``source/<method>/seed<S>/`` (those of
    ``methods`` and ``seeds`` when given; single_task always) into ``dest/<method>/seed<S>/``,
    atomically; returns the files written. ConfigError when ``source`` is not a folder or
    ``dest`` is ``source``."""
    src, dst = Path(source), Path(dest)
    if not src.is_dir():
        raise ConfigError(f"--from: {missing_folder(src)} is not a folder")
    if dst.resolve() == src.resolve():
        raise ConfigError(f"--collect: {dst} is the --from folder; give another one")
    if dst.resolve().is_relative_to(src.resolve()):
        raise ConfigError(f"--collect: {dst} is inside the --from folder {src}, whose run folders "
                          f"it would then hold; give a folder outside it")
    finished, _ = find_runs(src)
    keep = None if methods is None else set(parse_methods(methods)) | {SINGLE}
    wanted = None if seeds is None else set(parse_seeds(seeds))
    written: list[Path] = []
    for m, by_seed in finished.items():
        if keep is not None and m not in keep:
            continue
        for s, folder in sorted(by_seed.items()):
            if wanted is not None and s not in wanted:
                continue
            _read_json(folder / "metrics.json")         # a damaged run is refused, not copied
            for name in COLLECTED:
                if (folder / name).is_file():
                    text = (folder / name).read_bytes().decode("utf-8")
                    written.append(atomic_write_text(run_folder(dst, m, s) / name, text))
                else:
                    _say(f"{folder} has no {name}: not copied", progress)
    _say(f"copied {len(written)} files of the finished runs in {src} into {dst}", progress)
    return written


def add_seed_args(p: argparse.ArgumentParser) -> None:
    """The options of a comparison over seeds, added to ``aimmerging compare``'s parser."""
    p.add_argument("--seeds", help="comma-separated seeds: each method runs once per seed, "
                                   "in OUTPUT/<method>/seed<S>/ (e.g. --seeds 42,43,44)")
    p.add_argument("--reference", help="method the others' OP and BWT are compared with "
                                       "(default: replay when compared, else the first method)")
    p.add_argument("--bootstrap", type=_draws, default=None, metavar="N",
                   help=f"bootstrap draws of the intervals (default {BOOTSTRAP_DRAWS})")
    p.add_argument("--from", dest="from_dir", metavar="DIR",
                   help="run nothing: tabulate the run folders DIR/<method>/seed<S>/ "
                        "(a partial study too); writes into --output, default DIR")
    p.add_argument("--collect", metavar="DEST",
                   help="with --from: copy each finished run's small files ("
                        + ", ".join(COLLECTED) + ") into DEST/<method>/seed<S>/ and tabulate DEST")


def default_methods(args) -> None:
    """Set ``args.methods`` when ``--methods`` is not given: :data:`aimmerging.compare.DEFAULT_METHODS`,
    printed so that the user knows what runs."""
    from .compare import DEFAULT_METHODS

    if args.methods is None:
        args.methods = ",".join(DEFAULT_METHODS)
        print(f"methods: {args.methods} (--methods m1,m2 chooses others)")


def default_output(args, seeds: bool) -> None:
    """Set ``args.output`` when it is not given: ``runs/<config>_compare`` (with ``--seeds``:
    ``runs/<config>_seeds``), printed so that the user knows where the runs go."""
    if args.output is None:
        args.output = str(Path("runs") / f"{Path(args.config).stem}_{'seeds' if seeds else 'compare'}")
        print(f"comparison folder: {args.output} (--output DIR chooses another)")


def _draws(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def cmd_multiseed(args) -> int:
    """``aimmerging compare`` with ``--seeds`` or ``--from`` (see the module docstring)."""
    draws = args.bootstrap or BOOTSTRAP_DRAWS
    if args.from_dir is not None:
        if args.config is not None or args.overrides or args.no_fwt:
            raise ConfigError("--from tabulates the runs already in its folder: give no config "
                              "file, --set or --no-fwt")
        directory = args.from_dir
        if args.collect is not None:
            if args.output is not None:
                raise ConfigError("--collect: the comparison is written into DEST; give no --output")
            collect_results(args.from_dir, args.collect, args.methods, args.seeds, not args.quiet)
            directory = args.collect
        output = args.output
        tabulate(directory, args.methods, args.seeds, args.reference, draws, output=output,
                 progress=not args.quiet)
        out = Path(output if output is not None else directory)
    else:
        if args.collect is not None:
            raise ConfigError("--collect copies the runs of --from DIR; give --from")
        args.config, args.overrides = split_config_argument(args.config, args.overrides)
        default_methods(args)
        default_output(args, seeds=True)
        compare_seeds(args.config, args.methods, args.seeds, args.overrides, args.output,
                      fwt=not args.no_fwt, reference=args.reference, draws=draws,
                      progress=not args.quiet, data=args.data)
        out = Path(args.output)
    print((out / "comparison.md").read_text(encoding="utf-8"))
    print(f"comparison: {out / 'comparison.csv'}")
    return 0
