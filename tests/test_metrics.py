"""OP / BWT / FWT / forgetting against hand-computed matrices; CSV and JSON files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aimmerging.io import atomic_write_json, atomic_write_text
from aimmerging.metrics import AccuracyMatrix, compute_metrics, save_metrics

# a[i][j]: task i evaluated after training task j. Row 1 and 2 hold scores measured
# before the task was trained (20, 30, 40): they count for no metric.
A = [
    [80.0, 70.0, 60.0],
    [20.0, 90.0, 85.0],
    [30.0, 40.0, 75.0],
]
A0 = [78.0, 88.0, 80.0]


def test_three_by_three_by_hand() -> None:
    m = compute_metrics(A, A0)
    # OP = (60 + 85 + 75) / 3 = 220 / 3
    assert m["op"] == pytest.approx(220 / 3)
    # BWT = ((60 - 80) + (85 - 90)) / 2 = -12.5
    assert m["bwt"] == pytest.approx(-12.5)
    # FWT = ((80 - 78) + (90 - 88) + (75 - 80)) / 3 = -1/3
    assert m["fwt"] == pytest.approx(-1 / 3)
    # forgetting: task 0: max(80, 70) - 60 = 20; task 1: max(90) - 85 = 5 (the 20 at l=0 is
    # before task 1 was trained and does not count)
    assert m["forgetting"] == pytest.approx([20.0, 5.0])
    assert m["mean_forgetting"] == pytest.approx(12.5)
    assert m["num_tasks"] == 3


def test_upper_triangle_only_gives_the_same_numbers() -> None:
    upper = [[80.0, 70.0, 60.0], [None, 90.0, 85.0], [None, None, 75.0]]
    assert compute_metrics(upper, A0) == compute_metrics(A, A0)


def test_forgetting_uses_the_best_earlier_stage() -> None:
    # task 0 peaks after task 1 (95), then ends at 50: forgetting 45; BWT uses the diagonal
    a = [[80, 95, 50], [None, 60, 70], [None, None, 40]]
    m = compute_metrics(a)
    assert m["forgetting"] == [45.0, -10.0]  # task 1 improved: negative forgetting
    assert m["bwt"] == pytest.approx(((50 - 80) + (70 - 60)) / 2)  # -10
    assert m["fwt"] is None


def test_single_task() -> None:
    m = compute_metrics([[42.0]], [40.0])
    assert m == {
        "num_tasks": 1, "op": 42.0, "bwt": None, "fwt": 2.0,
        "forgetting": [], "mean_forgetting": None,
    }


def test_errors() -> None:
    with pytest.raises(ValueError, match="last column incomplete"):
        compute_metrics([[80, 70], [None, None]])
    with pytest.raises(ValueError, match="diagonal incomplete"):
        compute_metrics([[None, 70], [None, 60]])
    with pytest.raises(ValueError, match="square"):
        compute_metrics([[1, 2], [3]])
    with pytest.raises(ValueError, match="a0 has 2 values"):
        compute_metrics(A, [1, 2])
    with pytest.raises(ValueError, match="finite"):
        compute_metrics([[float("nan")]])
    with pytest.raises(ValueError, match="empty"):
        compute_metrics([])


def _filled() -> AccuracyMatrix:
    matrix = AccuracyMatrix(["dbpedia", "amazon", "yahoo"])
    for i, row in enumerate(A):
        for j, value in enumerate(row):
            if j >= i:
                matrix.set(i, j, value)
    return matrix


def test_accuracy_matrix_access() -> None:
    matrix = _filled()
    assert matrix.get(0, 2) == 60.0 and matrix.get(2, 0) is None
    assert matrix.get("amazon", "yahoo") == 85.0
    assert matrix.column(2) == [60.0, 85.0, 75.0]
    assert matrix.row(1) == [None, 90.0, 85.0]
    assert matrix.to_list() == [[80.0, 70.0, 60.0], [None, 90.0, 85.0], [None, None, 75.0]]
    assert matrix.compute_metrics(A0) == compute_metrics(A, A0)
    assert compute_metrics(matrix) == compute_metrics(matrix.to_list())
    matrix.set(0, 0, None)
    assert matrix.get(0, 0) is None
    with pytest.raises(IndexError):
        matrix.set(3, 0, 1.0)
    with pytest.raises(KeyError):
        matrix.get("imdb", 0)
    with pytest.raises(ValueError):
        matrix.set(0, 0, float("inf"))
    with pytest.raises(ValueError):
        AccuracyMatrix(["a", "a"])


def test_json_round_trip() -> None:
    matrix = _filled()
    data = json.loads(json.dumps(matrix.to_json_dict()))
    assert data == {"tasks": ["dbpedia", "amazon", "yahoo"], "matrix": matrix.to_list()}
    assert AccuracyMatrix.from_json_dict(data).to_list() == matrix.to_list()
    with pytest.raises(ValueError):
        AccuracyMatrix.from_json_dict({"tasks": ["a"], "matrix": [[1, 2]]})


def test_save_writes_csv_and_json(tmp_path: Path) -> None:
    matrix = _filled()
    matrix.set(1, 2, 85.25)
    csv_path, json_path = matrix.save(tmp_path / "run")
    assert csv_path == tmp_path / "run" / "accuracy_matrix.csv"
    assert csv_path.read_text() == (
        "task,after_dbpedia,after_amazon,after_yahoo\n"
        "dbpedia,80.0,70.0,60.0\n"
        "amazon,,90.0,85.25\n"
        "yahoo,,,75.0\n"
    )
    assert AccuracyMatrix.from_json_dict(json.loads(json_path.read_text())).to_list() == matrix.to_list()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "accuracy_matrix.csv", "accuracy_matrix.json"
    ]  # no temporary file left behind


def test_save_metrics(tmp_path: Path) -> None:
    metrics = compute_metrics(A, A0)
    path = save_metrics(tmp_path, metrics)
    assert path == tmp_path / "metrics.json"
    assert json.loads(path.read_text()) == metrics


def test_atomic_writes(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "file.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "twö")
    assert target.read_text(encoding="utf-8") == "twö"
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "bad.json", {"x": float("nan")})
    assert not (tmp_path / "bad.json").exists()
    atomic_write_json(tmp_path / "ok.json", {"é": [1, None]})
    assert (tmp_path / "ok.json").read_text(encoding="utf-8") == '{\n  "é": [\n    1,\n    null\n  ]\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "ok.json"]
