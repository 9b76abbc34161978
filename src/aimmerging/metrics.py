"""The accuracy matrix and the continual-learning metrics of SPEC.md.

``a[i][j]`` is the score (percent) on the test set of task i after training on
task j (0-based here; K is the last column). With ``a0[i]`` the score of a LoRA
trained on task i alone::

    OP  = mean_i a[i][K]
    BWT = mean_{i<K} (a[i][K] - a[i][i])              (None when K < 2)
    FWT = mean_i (a[i][i] - a0[i])                    (None without a0)
    forgetting[i] = max_{i <= l < K} a[i][l] - a[i][K]  for i < K   (Chaudhry et al.)

The maximum runs over the stages from the one that trained task i up to the one
before the last, skipping missing cells (None when all are missing).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Sequence

from aimmerging.io import atomic_write_json, atomic_write_text

__all__ = ["AccuracyMatrix", "compute_metrics", "learning_accuracy", "save_metrics"]

Matrix = Sequence[Sequence[float | None]]


def _check_value(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


class AccuracyMatrix:
    """K x K scores, row i = task i evaluated, column j = after training task j."""

    def __init__(self, tasks: Sequence[str]):
        names = list(tasks)
        if not names:
            raise ValueError("an accuracy matrix needs at least one task")
        if any(not isinstance(t, str) or not t for t in names):
            raise ValueError(f"task names must be non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names!r}")
        self.tasks = names
        self._cells: list[list[float | None]] = [[None] * len(names) for _ in names]

    def __len__(self) -> int:
        return len(self.tasks)

    def _index(self, key: int | str, axis: str) -> int:
        if isinstance(key, str):
            if key not in self.tasks:
                raise KeyError(f"{axis}: unknown task {key!r}")
            return self.tasks.index(key)
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key < len(self.tasks):
            raise IndexError(f"{axis} {key!r} out of range 0..{len(self.tasks) - 1}")
        return key

    def set(self, i: int | str, j: int | str, value: float | None) -> None:
        """Set a[i][j] (task index or name for i and j); None clears the cell."""
        row, col = self._index(i, "row"), self._index(j, "column")
        self._cells[row][col] = None if value is None else _check_value(value, f"a[{row}][{col}]")

    def get(self, i: int | str, j: int | str) -> float | None:
        return self._cells[self._index(i, "row")][self._index(j, "column")]

    def row(self, i: int | str) -> list[float | None]:
        return list(self._cells[self._index(i, "row")])

    def column(self, j: int | str) -> list[float | None]:
        col = self._index(j, "column")
        return [r[col] for r in self._cells]

    def to_list(self) -> list[list[float | None]]:
        return [list(r) for r in self._cells]

    def to_json_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "matrix": self.to_list()}

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> "AccuracyMatrix":
        if not isinstance(data, dict) or "tasks" not in data or "matrix" not in data:
            raise ValueError("accuracy matrix JSON needs 'tasks' and 'matrix'")
        out = cls(data["tasks"])
        rows = data["matrix"]
        k = len(out.tasks)
        if not isinstance(rows, list) or len(rows) != k or any(
            not isinstance(r, list) or len(r) != k for r in rows
        ):
            raise ValueError(f"accuracy matrix must be {k} x {k}")
        for i, r in enumerate(rows):
            for j, value in enumerate(r):
                out.set(i, j, value)
        return out

    def to_csv(self) -> str:
        """``task,after_<t1>,...`` then one row per task; missing cells are empty."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["task", *(f"after_{t}" for t in self.tasks)])
        for name, r in zip(self.tasks, self._cells):
            writer.writerow([name, *("" if v is None else repr(v) for v in r)])
        return buffer.getvalue()

    def save(self, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write accuracy_matrix.csv and accuracy_matrix.json (each atomically)."""
        folder = Path(directory)
        csv_path = atomic_write_text(folder / "accuracy_matrix.csv", self.to_csv())
        json_path = atomic_write_json(folder / "accuracy_matrix.json", self.to_json_dict())
        return csv_path, json_path

    def compute_metrics(self, a0: Sequence[float] | None = None) -> dict[str, Any]:
        return compute_metrics(self.to_list(), a0)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def compute_metrics(
    matrix: Matrix | AccuracyMatrix, a0: Sequence[float] | None = None
) -> dict[str, Any]:
    """OP, BWT, FWT and forgetting of a K x K matrix (lists with None for missing cells).

    Returns ``{"num_tasks", "op", "bwt", "fwt", "forgetting", "mean_forgetting"}``
    where ``forgetting`` is a list of K-1 values (task i < K). Raises ``ValueError``
    when the matrix is not square, the last column is incomplete, a diagonal cell
    needed by BWT/FWT is missing, or ``a0`` does not have K numbers.
    """
    rows = matrix.to_list() if isinstance(matrix, AccuracyMatrix) else [list(r) for r in matrix]
    k = len(rows)
    if k == 0:
        raise ValueError("empty accuracy matrix")
    for i, r in enumerate(rows):
        if len(r) != k:
            raise ValueError(f"accuracy matrix must be square: row {i} has {len(r)} cells, expected {k}")
        for j, value in enumerate(r):
            if value is not None:
                r[j] = _check_value(value, f"a[{i}][{j}]")
    last = k - 1
    missing = [i for i in range(k) if rows[i][last] is None]
    if missing:
        raise ValueError(f"last column incomplete: a[i][{last}] missing for i in {missing}")
    final = [float(rows[i][last]) for i in range(k)]  # type: ignore[arg-type]
    op = _mean(final)

    def diagonal(indices: range) -> list[float]:
        absent = [i for i in indices if rows[i][i] is None]
        if absent:
            raise ValueError(f"diagonal incomplete: a[i][i] missing for i in {absent}")
        return [float(rows[i][i]) for i in indices]  # type: ignore[arg-type]

    bwt = None
    if k >= 2:
        diag = diagonal(range(last))
        bwt = _mean([final[i] - diag[i] for i in range(last)])

    fwt = None
    if a0 is not None:
        base = list(a0)
        if len(base) != k:
            raise ValueError(f"a0 has {len(base)} values, expected {k}")
        base = [_check_value(v, f"a0[{i}]") for i, v in enumerate(base)]
        diag = diagonal(range(k))
        fwt = _mean([diag[i] - base[i] for i in range(k)])

    forgetting: list[float | None] = []
    for i in range(last):
        earlier = [rows[i][l] for l in range(i, last) if rows[i][l] is not None]
        forgetting.append(max(earlier) - final[i] if earlier else None)  # type: ignore[operator]
    known = [f for f in forgetting if f is not None]
    return {
        "num_tasks": k,
        "op": op,
        "bwt": bwt,
        "fwt": fwt,
        "forgetting": forgetting,
        "mean_forgetting": _mean(known) if known else None,
    }


def learning_accuracy(matrix: Matrix | AccuracyMatrix | None) -> float | None:
    """LA, the learning accuracy (Riemer et al., 2019): the mean over the K tasks of a[i][i],
    each task's score right after its own training (percent). It measures plasticity, as BWT
    measures retention: OP = LA + BWT x (K - 1) / K. None when the matrix is missing or a
    diagonal cell is (mtl, which scores the tasks only at the end)."""
    if matrix is None:
        return None
    rows = matrix.to_list() if isinstance(matrix, AccuracyMatrix) else [list(r) for r in matrix]
    diag = [r[i] if i < len(r) else None for i, r in enumerate(rows)]
    if not diag or any(v is None for v in diag):
        return None
    return _mean([_check_value(v, f"a[{i}][{i}]") for i, v in enumerate(diag)])


def save_metrics(directory: str | os.PathLike[str], metrics: dict[str, Any]) -> Path:
    """Write ``metrics`` to ``directory/metrics.json`` atomically; returns the path."""
    return atomic_write_json(Path(directory) / "metrics.json", metrics)
