"""Reading the real data, task and split names, and one-line errors on broken copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datapaths import DATA_ROOT

from aimmerging.data import Example, detect_layout, list_tasks, load_file, load_split
from aimmerging.data.formats import canonical_split
from aimmerging.data.registry import ORDERS
from aimmerging.errors import ConfigError, DataError

DATA = DATA_ROOT
LONG = DATA / "data_longsequence"
SUPERNI = DATA / "data_superni"

LONG_TASKS = sorted(set(ORDERS[4]))
SUPERNI_TASKS = sorted(set(ORDERS[6]))

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="/work/shared/data is absent")


def _raw(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------- real files


@needs_data
@pytest.mark.parametrize("split", ["train", "dev", "test"])
@pytest.mark.parametrize("task", LONG_TASKS)
def test_long_sequence_files_load(task: str, split: str) -> None:
    examples = load_split(LONG, task, split)
    raw = _raw(LONG / split / f"{task}_T5.json")
    assert len(examples) == len(raw) > 0
    assert all(isinstance(e, Example) for e in examples)
    assert examples[0] == Example(raw[0]["id"], raw[0]["input"], raw[0]["output"])
    assert examples[-1].id == raw[-1]["id"]
    assert all(e.input.endswith("\nAnswer:") for e in examples)


@needs_data
@pytest.mark.parametrize("split", ["train", "dev", "test"])
@pytest.mark.parametrize("task", SUPERNI_TASKS)
def test_superni_files_load(task: str, split: str) -> None:
    examples = load_split(SUPERNI, task, split)
    raw = _raw(SUPERNI / split / f"{task}_T5.json")
    assert [(e.id, e.input, e.output) for e in examples] == [
        (r["id"], r["input"], r["output"]) for r in raw
    ]  # data_id is dropped, outputs are kept verbatim (leading blanks included)


@needs_data
def test_list_tasks_and_layout_of_real_folders() -> None:
    assert detect_layout(LONG) == "aimmerging"
    long_tasks = list_tasks(LONG)
    assert sorted(long_tasks) == LONG_TASKS
    assert long_tasks["sst-2"] == {s: LONG / s / "sst-2_T5.json" for s in ("train", "dev", "test")}
    assert sorted(list_tasks(SUPERNI)) == SUPERNI_TASKS
    # the parent folder merges both benchmarks
    assert detect_layout(DATA) == "aimmerging"
    assert sorted(list_tasks(DATA)) == sorted(LONG_TASKS + SUPERNI_TASKS)
    assert load_split(DATA, "task363", "test") == load_split(SUPERNI, "task363", "test")


@needs_data
@pytest.mark.parametrize(
    "spelling,canonical",
    [
        ("SST-2", "sst-2"), ("sst2", "sst-2"), ("sst-2", "sst-2"), ("SST2", "sst-2"),
        ("AG News", "agnews"), ("agnews", "agnews"), ("ag", "agnews"),
        ("BoolQA", "boolqa"), ("boolq", "boolqa"), ("boolqa", "boolqa"),
        ("MNLI", "mnli"), ("WiC", "wic"),
    ],
)
def test_spellings_load_the_same_file(spelling: str, canonical: str) -> None:
    assert load_split(LONG, spelling, "dev") == load_split(LONG, canonical, "dev")


@needs_data
def test_superni_full_names_and_split_aliases() -> None:
    short = load_split(SUPERNI, "task363", "dev")
    assert load_split(SUPERNI, "task363_sst2_polarity_classification", "dev") == short
    assert load_split(SUPERNI, "TASK363", "validation") == short


def test_split_names() -> None:
    assert canonical_split("Validation") == "dev"
    assert canonical_split("train") == "train"
    with pytest.raises(ConfigError, match="unknown split"):
        canonical_split("holdout")


# ----------------------------------------------------------------- small copies


def _write(path: Path, data, raw_text: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(raw_text if raw_text is not None else json.dumps(data), encoding="utf-8")
    return path


def _records(n: int = 5, task: str = "agnews") -> list[dict]:
    return [{"id": f"{task}_{i}", "input": f"text {i}\nAnswer:", "output": "World"} for i in range(n)]


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """An AimMerging-layout copy: agnews (train/dev/test) and a custom task (train/test)."""
    for split in ("train", "dev", "test"):
        _write(tmp_path / split / "agnews_T5.json", _records())
    _write(tmp_path / "train" / "my_task.json", _records(3, "my_task"))
    _write(tmp_path / "test" / "my_task.json", _records(2, "my_task"))
    return tmp_path


def test_small_copy_loads_both_file_names(small: Path) -> None:
    tasks = list_tasks(small)
    assert sorted(tasks) == ["agnews", "my_task"]
    assert sorted(tasks["my_task"]) == ["test", "train"]
    assert len(load_split(small, "MY_TASK", "train")) == 3
    assert load_split(small, "ag", "test")[0] == Example("agnews_0", "text 0\nAnswer:", "World")


def test_record_without_id_gets_positional_id(small: Path) -> None:
    records = _records(2)
    del records[1]["id"]
    _write(small / "train" / "agnews_T5.json", records)
    assert [e.id for e in load_split(small, "agnews", "train")] == ["agnews_0", "agnews_1"]


def test_extra_keys_are_ignored(small: Path) -> None:
    records = _records(2)
    records[0]["data_id"] = 0
    records[0]["instruction"] = "ignored"
    _write(small / "train" / "agnews_T5.json", records)
    assert load_split(small, "agnews", "train")[0].input == "text 0\nAnswer:"


def _error(small: Path, task: str = "agnews", split: str = "train") -> str:
    with pytest.raises(DataError) as info:
        load_split(small, task, split)
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


def test_truncated_json(small: Path) -> None:
    path = small / "train" / "agnews_T5.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    message = _error(small)
    assert str(path) in message and "truncated JSON" in message and "line 1" in message


def test_json_lines_are_named(small: Path) -> None:
    import json

    path = small / "train" / "agnews_T5.json"
    path.write_text("\n".join(json.dumps(r) for r in _records()) + "\n")
    message = _error(small)
    assert f"{path}: invalid or truncated JSON at line 2" in message
    assert "JSON Lines is not read: the file must hold one JSON list of records" in message
    path.write_text("[1, 2")
    assert "JSON Lines" not in _error(small)                 # truncated: no hint


def test_record_missing_output(small: Path) -> None:
    records = _records()
    del records[3]["output"]
    path = _write(small / "train" / "agnews_T5.json", records)
    message = _error(small)
    assert message == f"{path}: record 3: missing field 'output'"


def test_record_missing_input(small: Path) -> None:
    records = _records()
    del records[0]["input"]
    path = _write(small / "train" / "agnews_T5.json", records)
    assert _error(small) == f"{path}: record 0: missing field 'input'"


def test_empty_list(small: Path) -> None:
    path = _write(small / "dev" / "agnews_T5.json", [])
    assert _error(small, split="dev") == f"{path}: no records (empty list)"


def test_empty_file(small: Path) -> None:
    path = _write(small / "dev" / "agnews_T5.json", None, raw_text="  \n")
    assert _error(small, split="dev") == f"{path}: file is empty"


def test_non_string_field(small: Path) -> None:
    records = _records()
    records[2]["output"] = 5
    path = _write(small / "train" / "agnews_T5.json", records)
    assert _error(small) == f"{path}: record 2: field 'output' must be a string, got int"
    records[2]["output"] = None
    _write(path, records)
    assert _error(small).endswith("record 2: field 'output' must be a string, got null")


def test_not_a_list_and_record_not_object(small: Path) -> None:
    path = _write(small / "train" / "agnews_T5.json", {"id": "x"})
    assert _error(small) == f"{path}: expected a JSON list of records, got object"
    _write(path, [_records(1)[0], "just text"])
    assert _error(small) == f"{path}: record 1: expected an object, got str"


def test_not_utf8(small: Path) -> None:
    path = small / "train" / "agnews_T5.json"
    path.write_bytes(b'[{"id": "a", "input": "\xff", "output": "b"}]')
    assert _error(small).startswith(f"{path}: not UTF-8")


def test_missing_folder_task_and_split(small: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="data folder not found"):
        load_split(missing, "agnews", "train")
    assert "no task 'yelp'" in _error(small, task="yelp")
    assert "found: agnews, my_task" in _error(small, task="yelp")
    message = _error(small, task="my_task", split="dev")
    assert message.startswith(str(small / "dev" / "my_task.json"))
    assert "missing dev split" in message


def test_folder_without_data(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no benchmark data found"):
        detect_layout(tmp_path / "empty")
    with pytest.raises(DataError, match="not a folder"):
        list_tasks(_write(tmp_path / "file.json", []))


def test_two_files_for_one_task(small: Path) -> None:
    _write(small / "train" / "AG_News.json", _records())
    with pytest.raises(DataError, match="already has a train file"):
        list_tasks(small)


def test_load_file_directly(small: Path) -> None:
    assert len(load_file(small / "train" / "agnews_T5.json")) == 5
