"""The run's traces: one row per step (signals) and one row per merge (merge trace).

Rows are kept in memory, written whole (atomically) to ``signals.csv`` and
``merge_trace.csv`` at every checkpoint, and restored from the checkpoint on resume.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError
from .io import atomic_write_text

SIGNAL_FIELDS = ("task", "stage", "step", "train_loss", "history_loss", "threshold", "interval",
                 "lr")
MERGE_FIELDS = ("task", "stage", "step", "interval_run", "next_interval", "lambda", "threshold",
                "activations", "alpha_new", "alpha_past", "rehearsal_steps", "rehearsal_skipped",
                "l1_change")


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.6g}"
    return value


def rows_to_csv(rows: list[dict], fields: tuple[str, ...]) -> str:
    """CSV text with a header of ``fields``; None becomes an empty cell."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in fields})
    return buf.getvalue()


def read_csv_rows(path: Path, columns: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Rows of a CSV file written by :func:`rows_to_csv` (empty list when absent).

    Raises ConfigError naming the file when it is not UTF-8 text, lacks one of ``columns``
    in its header, or has a row with more or fewer cells than the header (line numbers count
    the header as line 1)."""
    if not Path(path).is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, [])
            rows = []
            for cells in reader:
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise ConfigError(f"{path}, line {reader.line_num}: {len(cells)} cells, "
                                      f"the header has {len(header)}")
                rows.append(dict(zip(header, cells)))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise ConfigError(f"{path}: not CSV ({exc})") from None
    missing = [c for c in columns if c not in header]
    if missing:
        what = "empty (no header line)" if not header else f"missing column {', '.join(missing)}"
        raise ConfigError(f"{path}: {what}")
    return rows


def as_float(value: Optional[str]) -> Optional[float]:
    """A CSV cell as a float, or None when empty."""
    if value is None or value == "":
        return None
    return float(value)


class Traces:
    """Step signals and merge records of a run (see the module docstring)."""

    def __init__(self) -> None:
        self.signals: list[dict] = []
        self.merges: list[dict] = []

    def write(self, run_dir: Path) -> None:
        """Write ``signals.csv`` and ``merge_trace.csv`` atomically."""
        atomic_write_text(Path(run_dir) / "signals.csv", rows_to_csv(self.signals, SIGNAL_FIELDS))
        atomic_write_text(Path(run_dir) / "merge_trace.csv", rows_to_csv(self.merges, MERGE_FIELDS))

    def merge_counts(self) -> dict:
        """``merges`` (all of them) and ``effective_merges`` (alpha_past > 0) for metrics.json."""
        return {"merges": len(self.merges),
                "effective_merges": sum(1 for m in self.merges if float(m["alpha_past"]) > 0)}

    def state_dict(self) -> dict:
        return {"signals": self.signals, "merges": self.merges}

    def load_state_dict(self, state: dict) -> None:
        """Replace the rows with those of a :meth:`state_dict`.

        Raises:
            ValueError: ``state`` is not a mapping of row lists.
        """
        if not isinstance(state, dict) or not all(
                isinstance(state.get(k, []), list) and all(isinstance(r, dict) for r in state.get(k, []))
                for k in ("signals", "merges")):
            raise ValueError("traces: expected {'signals': [rows], 'merges': [rows]}")
        self.signals = list(state.get("signals", []))
        self.merges = list(state.get("merges", []))

    def drop_stage(self, stage: int) -> None:
        """Forget the rows of ``stage`` (1-based): a task that starts over."""
        self.signals = [r for r in self.signals if r.get("stage") != stage]
        self.merges = [r for r in self.merges if r.get("stage") != stage]
