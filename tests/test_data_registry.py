"""Task registry: names, metrics, labels (checked against the data), orders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datapaths import DATA_ROOT

from aimmerging.data import olora
from aimmerging.data.registry import (
    ORDERS,
    TASKS,
    TaskInfo,
    canonical_task_name,
    get_task_info,
    resolve_order,
)
from aimmerging.errors import ConfigError

DATA = DATA_ROOT
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="/work/shared/data is absent")


@pytest.mark.parametrize(
    "name,canonical",
    [
        ("SST-2", "sst-2"), ("sst2", "sst-2"), ("sst-2", "sst-2"), ("SST2", "sst-2"),
        ("sst_2", "sst-2"), ("AG News", "agnews"), ("agnews", "agnews"), ("ag", "agnews"),
        ("ag_news", "agnews"), ("BoolQA", "boolqa"), ("boolq", "boolqa"), ("boolqa", "boolqa"),
        ("MNLI", "mnli"), ("yahoo_answers_topics", "yahoo"), ("dbpedia_14", "dbpedia"),
        ("task363", "task363"), ("task363_sst2_polarity_classification", "task363"),
        ("TASK1687", "task1687"), ("task002_T5", "task002"), ("sst-2_T5.json", "sst-2"),
        ("  CB ", "cb"), ("MyTask", "mytask"),
    ],
)
def test_canonical_task_name(name: str, canonical: str) -> None:
    assert canonical_task_name(name) == canonical


def test_canonical_task_name_rejects_empty() -> None:
    with pytest.raises(ConfigError):
        canonical_task_name("  ")
    with pytest.raises(ConfigError):
        canonical_task_name(None)  # type: ignore[arg-type]


def test_thirty_tasks_with_benchmarks_and_metrics() -> None:
    assert len(TASKS) == 30
    assert {t.benchmark for t in TASKS.values()} == {"standard_cl", "long_sequence", "superni"}
    standard = sorted(n for n, t in TASKS.items() if t.benchmark == "standard_cl")
    assert standard == ["agnews", "amazon", "dbpedia", "yahoo", "yelp"]
    accuracy = {n for n, t in TASKS.items() if t.metric == "accuracy"}
    assert accuracy == set(ORDERS[4]) | {"task363", "task875", "task1687"}
    assert {n for n, t in TASKS.items() if t.metric == "rougeL"} == set(ORDERS[6]) - accuracy
    assert all(t.name == n for n, t in TASKS.items())


def test_get_task_info() -> None:
    info = get_task_info("SST2")
    assert info == TaskInfo("sst-2", "long_sequence", "accuracy", ("Good", "Bad"))
    assert get_task_info("task073").metric == "rougeL"
    assert get_task_info("task073").labels == ("A", "B", "C", "D", "E")
    assert get_task_info("task002").labels is None
    with pytest.raises(ConfigError) as exc:
        get_task_info("nosuchtask")
    assert "'nosuchtask'" in str(exc.value) and "dbpedia" in str(exc.value)


def test_unknown_task_with_default_metric() -> None:
    assert get_task_info("My_Task", default_metric="rougeL") == TaskInfo(
        "my_task", "custom", "rougeL", None
    )
    assert get_task_info("boolq", default_metric="rougeL").metric == "accuracy"
    with pytest.raises(ConfigError, match="unknown metric"):
        get_task_info("My_Task", default_metric="bleu")


@needs_data
@pytest.mark.parametrize("task", sorted(set(ORDERS[4])))
def test_long_sequence_labels_are_the_instruction_options(task: str) -> None:
    for split in ("train", "test"):
        records = json.loads((DATA / "data_longsequence" / split / f"{task}_T5.json").read_text())
        options = {tuple(olora.split_input(r["input"])[1]) for r in records}
        assert options == {TASKS[task].labels}
        outputs = {r["output"] for r in records}
        assert outputs <= set(TASKS[task].labels)


@needs_data
@pytest.mark.parametrize("task", ["task363", "task875", "task1687", "task073"])
def test_superni_label_sets_match_the_data(task: str) -> None:
    outputs = set()
    for split in ("train", "test"):
        records = json.loads((DATA / "data_superni" / split / f"{task}_T5.json").read_text())
        outputs |= {r["output"].strip() for r in records}
    assert outputs == set(TASKS[task].labels)


def test_orders() -> None:
    assert sorted(ORDERS) == [1, 2, 3, 4, 5, 6, 7]
    assert ORDERS[1] == ("dbpedia", "amazon", "yahoo", "agnews")
    for k in (4, 5, 6, 7):
        assert len(ORDERS[k]) == len(set(ORDERS[k])) == 15
    assert set(ORDERS[4]) == set(ORDERS[5])
    assert set(ORDERS[6]) == set(ORDERS[7])
    assert all(t in TASKS for order in ORDERS.values() for t in order)
    assert ORDERS[7][-1] == "task875" and ORDERS[6][0] == "task1572"


def test_resolve_order() -> None:
    assert resolve_order(2) == list(ORDERS[2])
    assert resolve_order("order_3") == list(ORDERS[3])
    assert resolve_order("5") == list(ORDERS[5])
    assert resolve_order("SST2, boolq,task363") == ["sst-2", "boolqa", "task363"]
    assert resolve_order(["AG News", "yelp"]) == ["agnews", "yelp"]
    for bad in (0, 8, True, "", [], "sst2,SST-2", 3.5):
        with pytest.raises(ConfigError):
            resolve_order(bad)  # type: ignore[arg-type]
