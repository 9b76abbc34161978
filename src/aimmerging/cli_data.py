"""``data check DIR`` and ``data show DIR TASK``: the data subcommands of the CLI.

The lead's ``cli.py`` calls :func:`add_data_parser` with its subparsers and then
``args.func(args)``; each function returns an exit code. Only
:class:`~aimmerging.errors.DataError` and :class:`~aimmerging.errors.ConfigError`
escape from here.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from aimmerging.data.formats import SPLITS, list_tasks, load_split
from aimmerging.data.registry import TASKS
from aimmerging.errors import AimmergingError, ConfigError, DataError

__all__ = ["add_data_parser", "cmd_data_check", "cmd_data_show", "format_table"]

_REQUIRED_SPLITS = ("train", "test")


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``data check`` and ``data show`` under ``subparsers``."""
    parser = subparsers.add_parser("data", help="check or show benchmark data")
    sub = parser.add_subparsers(dest="data_command", metavar="{check,show}")
    sub.required = True

    check = sub.add_parser(
        "check", help="validate every file of a data folder and count records per split"
    )
    check.add_argument("dir", help="data folder (AimMerging or O-LoRA CL_Benchmark layout)")
    check.set_defaults(func=cmd_data_check)

    show = sub.add_parser("show", help="print the first records of a split as the model sees them")
    show.add_argument("dir", help="data folder")
    show.add_argument("task", help="task name (any spelling: sst2, SST-2, task363 ...)")
    show.add_argument("--split", default="train", help="train, dev or test (default: train)")
    show.add_argument(
        "--limit", type=int, default=5, help="number of records, 0 for all (default: 5)"
    )
    show.add_argument(
        "--json", action="store_true", help="one JSON object {id, input, output} per line"
    )
    show.set_defaults(func=cmd_data_show)
    return parser


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
    2 otherwise (problems go to stderr as ``error: <message>``). Records with an empty or
    whitespace-only input are no problem (:mod:`aimmerging.batching` gives a prompt with no
    token the tokenizer's BOS); a ``note:`` line names the file and the first such record.
    """
    tasks = list_tasks(args.dir)  # a missing or unrecognised folder raises DataError
    errors: list[str] = []
    notes: list[str] = []
    rows: list[list[str]] = []
    for name, files in tasks.items():
        info = TASKS.get(name)
        # a task outside the registry is scored by exact match (runner.load_tasks)
        row = [name, info.benchmark if info else "custom", info.metric if info else "accuracy"]
        for split in SPLITS:
            if split not in files:
                row.append("-")
                if split in _REQUIRED_SPLITS:
                    errors.append(f"{args.dir}: task {name!r} has no {split} split")
                continue
            try:
                examples = load_split(args.dir, name, split)
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
        rows.append(row)
    print(format_table(["task", "benchmark", "metric", *SPLITS], rows))
    print(f"{len(tasks)} tasks, {len(errors)} problem(s)")
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
