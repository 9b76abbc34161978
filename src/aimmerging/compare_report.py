"""The files of a one-seed comparison: ``comparison.csv``, ``.json`` and ``.md`` (the paper's
table 2 columns plus table 6's time, and each method's accuracy matrix)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from .errors import ConfigError
from .io import atomic_write_json, atomic_write_text

#: the columns of comparison.csv
COLUMNS = ("method", "OP", "FWT", "BWT", "train_seconds", "merges", "effective_merges")

__all__ = ["COLUMNS", "METRICS_FIELDS", "check_metrics", "markdown_table", "matrix_markdown", "read_json",
           "write_comparison"]


def read_json(path: Path, check_fields: bool = True) -> dict:
    """A run file's JSON object; ConfigError naming the file when it cannot be read or is
    not an object. A file named ``metrics.json`` is also checked by :func:`check_metrics`
    unless ``check_fields`` is false (the plots read only the fields they draw)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(data).__name__}")
    if check_fields and Path(path).name == "metrics.json":
        check_metrics(data, path)
    return data


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


#: metrics.json's fields that the tables read: (field, kind, required); "number?" may be null
METRICS_FIELDS = (("op", "number", True), ("bwt", "number?", True), ("fwt", "number?", False),
                  ("merges", "count", True), ("tasks", "names", True), ("method", "text", False),
                  ("seed", "count", False), ("accuracy_matrix", "matrix", False),
                  ("single_task_scores", "scores", False), ("counters", "object", False),
                  ("timing_seconds", "object", False))


def check_metrics(m: dict, path) -> None:
    """Check the fields of a run's ``metrics.json`` that the comparison tables read
    (:data:`METRICS_FIELDS`): OP a number, BWT and FWT numbers or null, merges and seed
    counts (ints >= 0), tasks a list of names, the accuracy matrix a list of rows of numbers
    or nulls. Raises ConfigError naming the file and the field."""
    def bad(field, want, v):
        raise ConfigError(f"{path}: field {field}: expected {want}, found {json.dumps(v)[:60]}")

    for field, kind, required in METRICS_FIELDS:
        if field not in m:
            if required:
                raise ConfigError(f"{path}: field {field} is missing (a finished run writes it)")
            continue
        v = m[field]
        if kind == "number" and not _is_number(v):
            bad(field, "a number", v)
        elif kind == "number?" and v is not None and not _is_number(v):
            bad(field, "a number or null", v)
        elif kind == "count" and not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            bad(field, "a whole number >= 0", v)
        elif kind == "text" and not isinstance(v, str):
            bad(field, "a string", v)
        elif kind == "names" and not (isinstance(v, list) and v and all(isinstance(t, str) for t in v)):
            bad(field, "a non-empty list of task names", v)
        elif kind == "matrix" and not (isinstance(v, list) and all(
                isinstance(r, list) and all(c is None or _is_number(c) for c in r) for r in v)):
            bad(field, "a list of rows of numbers or nulls", v)
        elif kind == "scores" and v is not None and not (isinstance(v, dict) and all(
                c is None or _is_number(c) for c in v.values())):
            bad(field, "an object of numbers", v)
        elif kind == "object" and v is not None and not isinstance(v, dict):
            bad(field, "an object", v)


def rows_csv(rows: list[dict], columns: Sequence[str]) -> str:
    """CSV text of ``rows`` with a header of ``columns``; None becomes an empty cell."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in columns})
    return buf.getvalue()


def _cell(value, best: Optional[float], digits: int = 2) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return f"**{text}**" if best is not None and value == best else text


def matrix_markdown(method: str, tasks: Sequence[str], matrix: Sequence[Sequence]) -> list[str]:
    """Lines of a markdown accuracy matrix (rows: task; columns: after training on; percent)."""
    lines = [f"### {method}", "", "| task | " + " | ".join(f"after {t}" for t in tasks) + " |",
             "|---|" + "---:|" * len(tasks)]
    for t, row in zip(tasks, matrix):
        cells = ["" if v is None else f"{v:.1f}" for v in row]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown_table(rows: list[dict], meta: dict, matrices: Optional[dict] = None) -> str:
    """The comparison as markdown: the paper's table 2 columns plus table 6's time.

    ``matrices`` (method -> (tasks, accuracy matrix)) adds each method's matrix below.
    """
    best = {}
    for col in ("OP", "FWT", "BWT"):
        vals = [r[col] for r in rows if r.get(col) is not None]
        best[col] = max(vals) if len(vals) > 1 and len(set(vals)) > 1 else None
    tasks = meta.get("tasks") or []
    over = meta.get("overrides") or []
    lines = [f"# Continual-learning comparison: {Path(str(meta.get('config', '?'))).name}", "",
             f"- config file: `{meta.get('config', '?')}`"
             + (f" with `--set {' '.join(over)}`" if over else ""),
             f"- seed: {meta.get('seed', '?')}; model: {meta.get('model', '?')}",
             f"- {len(tasks)} tasks, in this order: {', '.join(tasks) if tasks else '?'}", "",
             "| Method | OP ↑ | FWT ↑ | BWT ↑ | Training time (s) | Merges | Effective merges |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {_cell(r['OP'], best['OP'])} | "
                     f"{_cell(r['FWT'], best['FWT'])} | {_cell(r['BWT'], best['BWT'])} | "
                     f"{r['train_seconds']:.1f} | {r['merges']} | {r['effective_merges']} |")
    a0 = meta.get("single_task_scores")
    a0_text = (", ".join(f"{t} {v:.2f}" for t, v in a0.items()) if a0 else "not run (--no-fwt)")
    lines += ["",
              "OP, FWT and BWT are in percentage points after training on the final task "
              "(docs/algorithm.md, \"Metrics\"); the best value of a column is in bold. ",
              f"FWT compares each task's score right after training it with a0, the score of a "
              f"LoRA trained on that task alone: the `single_task` run gives a0 ({a0_text}).",
              "Training time is the wall time of the training loops in seconds (history-loss "
              "monitoring, rehearsal and merges included; for the methods that do not use the "
              "history loss, the time spent measuring it for the plots only is left out). "
              "Merges counts the merges of the iterative merging methods (`merge_trace.csv`); "
              "effective merges are those with alpha_past > 0 (the rehearsed knowledge was fused "
              "in). `single_merge`'s one merge after each task is not among them "
              "(`counters.single_merges` in its metrics.json).", ""]
    if matrices:
        lines += ["## Accuracy matrices (percent; rows: task, columns: after training on)", ""]
        for method, (m_tasks, matrix) in matrices.items():
            lines += matrix_markdown(method, m_tasks, matrix)
    return "\n".join(lines)


def write_comparison(directory, rows: list[dict], meta: dict) -> list[Path]:
    """Write comparison.csv, comparison.json and comparison.md (atomically)."""
    d = Path(directory)
    matrices = {}
    for r in rows:
        path = d / r["method"] / "metrics.json"
        m = read_json(path) if path.is_file() else {}
        if m.get("tasks") and m.get("accuracy_matrix"):
            matrices[r["method"]] = (m["tasks"], m["accuracy_matrix"])
    return [atomic_write_text(d / "comparison.csv", rows_csv(rows, COLUMNS)),
            atomic_write_json(d / "comparison.json", {**meta, "rows": rows}),
            atomic_write_text(d / "comparison.md", markdown_table(rows, meta, matrices))]
