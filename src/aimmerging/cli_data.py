"""``data check DIR|CONFIG`` and ``data show DIR|CONFIG TASK``: the data subcommands of the CLI.

Given a YAML config instead of a data folder, both work on the config's tasks: benchmark
names in its ``data.dir`` (or ``--data DIR``) and tasks given by their files alike.

The lead's ``cli.py`` calls :func:`add_data_parser` with its subparsers and then
``args.func(args)``; each function returns an exit code. Only
:class:`~aimmerging.errors.DataError` and :class:`~aimmerging.errors.ConfigError`
escape from here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from aimmerging.data.formats import SPLITS, list_tasks, load_split
from aimmerging.data.registry import TASKS
from aimmerging.errors import AimmergingError, ConfigError, DataError

__all__ = ["add_data_parser", "cmd_data_check", "cmd_data_show", "format_table"]

_REQUIRED_SPLITS = ("train", "test")


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``data check`` and ``data show`` under ``subparsers``."""
    from aimmerging.data.location import add_data_arg

    parser = subparsers.add_parser("data", help="check or show benchmark data")
    sub = parser.add_subparsers(dest="data_command", metavar="{check,show}")
    sub.required = True

    check = sub.add_parser(
        "check", help="validate every file of a data folder, or every task of a config, and "
                      "count records per split"
    )
    check.add_argument("dir", help="data folder (AimMerging or O-LoRA CL_Benchmark layout), or a "
                                   "YAML config (its data.tasks, files included)")
    add_data_arg(check)
    _add_set_arg(check)
    check.set_defaults(func=cmd_data_check)

    show = sub.add_parser("show", help="print the first records of a split as the model sees them")
    show.add_argument("dir", help="data folder, or a YAML config")
    show.add_argument("task", help="task name (any spelling: sst2, SST-2, task363 ...)")
    show.add_argument("--split", default="train", help="train, dev or test (default: train)")
    show.add_argument(
        "--limit", type=int, default=5, help="number of records, 0 for all (default: 5)"
    )
    show.add_argument(
        "--json", action="store_true", help="one JSON object {id, input, output} per line"
    )
    add_data_arg(show)
    _add_set_arg(show)
    show.set_defaults(func=cmd_data_show)
    return parser


def _add_set_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                   metavar="KEY=VALUE", help="with a config: override its values as `aimmerging "
                                             "run` does, e.g. --set data.n_test=50")


def _target(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The ``dir`` argument (``~`` expanded, as ``--data`` expands it) and the ``--set``
    items, which are refused for a data folder (they change a config)."""
    target = str(Path(args.dir).expanduser())
    items = list(getattr(args, "overrides", None) or [])
    if items and not _is_config(target):
        raise ConfigError(f"--set changes a config, and {target} is a data folder; give a YAML "
                          f"config instead")
    return target, items


def _add_problems(errors: list[str], problems: list[str]) -> None:
    """Append the ``problems`` not yet in ``errors``, once each (a dev split held out of the
    train file fails with that file: one line, not one per split)."""
    errors += [p for p in dict.fromkeys(problems) if p not in errors]


def _is_config(target: str) -> bool:
    """Whether the ``dir`` argument names a YAML config rather than a data folder."""
    return str(target).lower().endswith((".yaml", ".yml")) and not Path(target).is_dir()


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table: text columns left-aligned, counts right-aligned."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    numeric = [all(r[c].isdigit() or r[c] in ("-", "ERROR") for r in rows) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(cells, widths, numeric)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def cmd_data_check(args: argparse.Namespace) -> int:
    """Load every file; print a task x split table of counts, then one line per problem.

    Returns 0 when all files load and every task has a train and a test split,
    2 otherwise (problems go to stderr as ``error: <message>``). Given a config, checks
    the tasks of its ``data.tasks`` (:func:`check_config`). Records with an empty or
    whitespace-only input are no problem (:mod:`aimmerging.batching` gives a prompt with no
    token the tokenizer's BOS); a ``note:`` line names the file and the first such record.
    """
    args.dir, overrides = _target(args)
    if _is_config(args.dir):
        return check_config(args.dir, getattr(args, "data", None), overrides)
    tasks = list_tasks(args.dir)  # a missing or unrecognised folder raises DataError
    errors: list[str] = []
    notes: list[str] = []
    rows: list[list[str]] = []
    for name, files in tasks.items():
        row, problems, blank_notes = _folder_row(args.dir, name, files)
        notes += blank_notes
        rows.append(row)
        _add_problems(errors, problems)
    print(format_table(["task", "benchmark", "metric", *SPLITS], rows))
    print(f"{len(tasks)} tasks, {len(errors)} problem(s)")
    for message in notes:
        print(f"note: {message}")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 2 if errors else 0


def _folder_row(data_dir, name: str, files: dict) -> tuple[list[str], list[str], list[str]]:
    """One benchmark task's row of counts (train, dev, test files), its problems and its notes
    (files with records whose input is empty or white space)."""
    info = TASKS.get(name)
    # a task outside the registry is scored by exact match (runner.load_tasks)
    row = [name, info.benchmark if info else "custom", info.metric if info else "accuracy"]
    errors, notes = [], []
    for split in SPLITS:
        if split not in files:
            row.append("-")
            if split in _REQUIRED_SPLITS:
                errors.append(f"{data_dir}: task {name!r} has no {split} split")
            continue
        try:
            examples = load_split(data_dir, name, split)
        except DataError as exc:
            row.append("ERROR")
            errors.append(str(exc))
            continue
        row.append(str(len(examples)))
        blank = [ex.id for ex in examples if not ex.input.strip()]
        if blank:
            notes.append(f"{files[split]}: {len(blank)} record(s) with an empty or whitespace-only "
                         f"input (first: id {blank[0]!r}); a prompt with no token is given the "
                         f"tokenizer's BOS token alone")
    return row, errors, notes


def check_config(path: str, data: str | None = None, overrides: list[str] | None = None) -> int:
    """``data check CONFIG``: every task of the config's stream, benchmark names (their files
    in ``data.dir``) and tasks given by their files alike, with the samples a run draws
    (``run_train`` and ``run_<eval.split>``). Returns 0, or 2 when there is a problem."""
    from aimmerging.config import load_config
    from aimmerging.data.custom import ROLES, load_custom_task, load_role
    from aimmerging.data.sampling import load_task_data
    from aimmerging.runner import data_folder, task_entries

    cfg = load_config(path, list(overrides or []), data=data)
    entries = task_entries(cfg)
    data_dir = data_folder(cfg, entries)
    available = list_tasks(data_dir) if data_dir is not None else {}
    split = cfg.eval.split
    rows, errors, notes = [], [], []
    for entry in entries:
        drawn = None
        if isinstance(entry, str) and data_dir is None:
            rows.append([entry, "demo", "accuracy", "-", "-", "-", "-", "-"])
            continue
        if isinstance(entry, str):
            if entry not in available:
                errors.append(f"data.dir: {data_dir} has no files for task {entry!r}")
                rows.append([entry, "-", "-", "-", "-", "-", "-", "-"])
                continue
            row, problems, blank_notes = _folder_row(data_dir, entry, available[entry])
            notes += blank_notes
            if not problems:
                try:
                    drawn = load_task_data(data_dir, entry, cfg.data.n_train, cfg.data.n_test,
                                           cfg.seed, split, default_metric=row[2])
                except AimmergingError as exc:
                    problems.append(str(exc))
        else:
            row, problems = [entry.name, "custom", entry.metric], []
            for role in ROLES:
                try:
                    examples = load_role(entry, role)
                except DataError as exc:
                    row.append("ERROR")
                    problems.append(str(exc))
                    continue
                row.append("-" if examples is None else str(len(examples)))
            if not problems:
                try:
                    drawn = load_custom_task(entry, cfg.data.n_train, cfg.data.n_test, cfg.seed,
                                             split, notes=notes)
                except AimmergingError as exc:
                    problems.append(str(exc))
        row += ["ERROR", "ERROR"] if drawn is None else [str(len(drawn.train)), str(len(drawn.test))]
        rows.append(row)
        _add_problems(errors, problems)
    print(format_table(["task", "benchmark", "metric", *SPLITS, "run_train", f"run_{split}"], rows))
    print(f"{len(entries)} tasks, {len(errors)} problem(s)")
    for message in notes:
        print(f"note: {message}")
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 2 if errors else 0


def _show_readable(examples: list, split: str) -> None:
    for index, example in enumerate(examples):
        print(f"=== [{index}] {example.id} ({split})")
        print("--- input:")
        print(example.input)
        print(f"--- output: {json.dumps(example.output, ensure_ascii=False)}")
        print()


def cmd_data_show(args: argparse.Namespace) -> int:
    """Print the first ``--limit`` records of a split, in file order."""
    limit = args.limit
    if limit is None or limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {limit}")
    args.dir, overrides = _target(args)
    if _is_config(args.dir):
        examples = _config_split(args.dir, args.task, args.split, getattr(args, "data", None),
                                 overrides)
    else:
        examples = load_split(args.dir, args.task, args.split)
    if limit:
        examples = examples[:limit]
    try:
        if args.json:
            for example in examples:
                record = {"id": example.id, "input": example.input, "output": example.output}
                print(json.dumps(record, ensure_ascii=False))
        else:
            _show_readable(examples, args.split)
        sys.stdout.flush()
    except BrokenPipeError:  # `... | head`: the reader went away, which is fine
        return 0
    return 0


def _config_split(path: str, task: str, split: str, data: str | None,
                  overrides: list[str] | None = None) -> list:
    """The records of one split of one task of a config's stream, in file order (a benchmark
    name: its file in ``data.dir``; a task given by its files: that role's source)."""
    from aimmerging.config import load_config
    from aimmerging.data.custom import load_role
    from aimmerging.data.formats import canonical_split
    from aimmerging.data.registry import canonical_task_name
    from aimmerging.runner import data_folder, task_entries

    cfg = load_config(path, list(overrides or []), data=data)
    split = canonical_split(split)
    entries = task_entries(cfg)
    for entry in entries:
        if not isinstance(entry, str) and entry.name.lower() == task.lower():
            examples = load_role(entry, split)
            if examples is None:
                raise DataError(f"{path}: task {entry.name} has no {split} records (no {split} "
                                f"key, and its train source has no {split} split)")
            return examples
    names = [e for e in entries if isinstance(e, str)]
    if canonical_task_name(task) not in names:
        shown = ", ".join(e if isinstance(e, str) else e.name for e in entries)
        raise ConfigError(f"{path}: no task {task!r} in data.tasks (tasks: {shown})")
    data_dir = data_folder(cfg)
    if data_dir is None:
        raise ConfigError(f"{path}: {task} is a task of the demo stream (data.dir: null), "
                          f"which has no files to show")
    return load_split(data_dir, task, split)


def _guarded(fn):  # pragma: no cover - convenience for running this module alone
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except AimmergingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run


if __name__ == "__main__":  # pragma: no cover
    _parser = argparse.ArgumentParser(prog="python -m aimmerging.cli_data")
    add_data_parser(_parser.add_subparsers(dest="command", required=True))
    _args = _parser.parse_args()
    sys.exit(_guarded(_args.func)(_args))
