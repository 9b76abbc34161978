"""Seeded subsampling (plain and stratified) and load_task_data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from datapaths import DATA_ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from aimmerging.data import Example, TaskData, load_split, load_task_data, subsample
from aimmerging.data.sampling import _largest_remainder
from aimmerging.errors import ConfigError

DATA = DATA_ROOT
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="/work/shared/data is absent")


def _examples(labels: list[str]) -> list[Example]:
    return [Example(f"x_{i}", f"in {i}", label) for i, label in enumerate(labels)]


def test_all_when_n_is_none_or_large() -> None:
    items = _examples(list("abcab"))
    assert subsample(items, None, 0) == items
    assert subsample(items, 5, 0) == items
    assert subsample(items, 99, 0, stratify=True) == items
    assert subsample(items, 0, 0) == []


def test_seeded_and_in_file_order() -> None:
    items = _examples(["a"] * 50)
    first = subsample(items, 10, 7)
    assert first == subsample(items, 10, 7)
    assert first != subsample(items, 10, 8)
    positions = [items.index(e) for e in first]
    assert positions == sorted(positions)
    assert subsample(items, 10, "7:task:train") == subsample(items, 10, "7:task:train")


def test_bad_n() -> None:
    with pytest.raises(ValueError):
        subsample(_examples(["a"]), -1, 0)
    with pytest.raises(ValueError):
        subsample(_examples(["a"]), True, 0)  # type: ignore[arg-type]


def test_largest_remainder_by_hand() -> None:
    # counts 5, 3, 2 (N = 10), n = 4: exact shares 2.0, 1.2, 0.8 -> floors 2, 1, 0;
    # one seat left goes to the largest remainder (0.8) -> 2, 1, 1
    assert _largest_remainder([5, 3, 2], 4) == [2, 1, 1]
    # counts 1, 1, 1, n = 2: equal remainders, first groups win -> 1, 1, 0
    assert _largest_remainder([1, 1, 1], 2) == [1, 1, 0]


def test_stratified_proportions() -> None:
    items = _examples(["a"] * 60 + ["b"] * 30 + ["c"] * 10)
    picked = subsample(items, 20, 3, stratify=True)
    assert Counter(e.output for e in picked) == {"a": 12, "b": 6, "c": 2}
    positions = [items.index(e) for e in picked]
    assert positions == sorted(positions)


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.sampled_from("abcd"), min_size=1, max_size=60),
    n=st.integers(min_value=0, max_value=70),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_stratified_properties(labels: list[str], n: int, seed: int) -> None:
    items = _examples(labels)
    picked = subsample(items, n, seed, stratify=True)
    assert len(picked) == min(n, len(items))
    assert len({e.id for e in picked}) == len(picked)
    ids = [e.id for e in items]
    assert [ids.index(e.id) for e in picked] == sorted(ids.index(e.id) for e in picked)
    if n < len(items):
        total = Counter(labels)
        got = Counter(e.output for e in picked)
        for label, count in total.items():
            share = n * count / len(items)
            assert int(share) <= got[label] <= int(share) + 1


@needs_data
def test_load_task_data_long_sequence() -> None:
    long = DATA / "data_longsequence"
    data = load_task_data(long, "SST2", n_train=100, n_test=50, seed=1)
    assert isinstance(data, TaskData)
    assert data.info.name == "sst-2" and data.info.metric == "accuracy"
    assert len(data.train) == 100 and len(data.test) == 50
    assert Counter(e.output for e in data.test) == {"Good": 25, "Bad": 25}  # 444/428 of 872
    again = load_task_data(long, "sst-2", n_train=200, n_test=50, seed=1)
    assert again.test == data.test  # the test draw does not depend on n_train
    assert set(data.train) <= set(load_split(long, "sst-2", "train"))


@needs_data
def test_load_task_data_superni_and_dev_split() -> None:
    sup = DATA / "data_superni"
    data = load_task_data(sup, "task1290", n_train=None, n_test=None, seed=0)
    assert data.info.metric == "rougeL"
    assert len(data.train) == 1000 and len(data.test) == 100
    assert data.test == load_split(sup, "task1290", "test")
    dev = load_task_data(sup, "task1290", n_train=600, n_test=100, seed=0, split="dev")
    assert (dev.split, dev.source, len(dev.test)) == ("dev", "held out from the train file", 100)
    assert set(dev.test) <= set(load_split(sup, "task1290", "train")) - set(dev.train)


def test_load_task_data_custom_task(tmp_path: Path) -> None:
    import json

    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        records = [{"id": f"m_{i}", "input": "q", "output": "a"} for i in range(4)]
        (tmp_path / split / "mine.json").write_text(json.dumps(records))
    with pytest.raises(ConfigError, match="unknown task 'mine'"):
        load_task_data(tmp_path, "mine", 2, 2, seed=0)
    data = load_task_data(tmp_path, "mine", 2, None, seed=0, default_metric="rougeL")
    assert data.info.benchmark == "custom" and len(data.train) == 2 and len(data.test) == 4


def test_more_examples_than_a_split_has_are_named(tmp_path: Path) -> None:
    import json

    from aimmerging.config import build_config
    from aimmerging.runner import load_tasks, sample_size_notes

    for split, n in (("train", 4), ("test", 3)):
        (tmp_path / split).mkdir()
        records = [{"id": f"m_{i}", "input": "q", "output": "a"} for i in range(n)]
        (tmp_path / split / "mine.json").write_text(json.dumps(records))
    cfg = build_config({"data": {"dir": str(tmp_path), "tasks": ["mine"], "n_train": 10, "n_test": 3}})
    tasks = load_tasks(cfg)
    assert len(tasks[0].train) == 4
    assert sample_size_notes(cfg, tasks) == [
        "mine: 10 train examples asked for, the train split has 4: all are used"]
