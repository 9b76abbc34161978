"""The O-LoRA CL_Benchmark layout gives exactly the AimMerging records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datapaths import DATA_ROOT

from aimmerging.data import detect_layout, list_tasks, load_split
from aimmerging.data import olora
from aimmerging.data.registry import ORDERS
from aimmerging.errors import DataError

DATA = DATA_ROOT
LONG = DATA / "data_longsequence"
N_PER_SPLIT = 40

# Folder names as O-LoRA's CL_Benchmark spells them.
OLORA_FOLDERS = {
    "agnews": ("TC", "agnews"), "dbpedia": ("TC", "dbpedia"), "yahoo": ("TC", "yahoo"),
    "amazon": ("SC", "amazon"), "yelp": ("SC", "yelp"), "imdb": ("SC", "IMDB"),
    "sst-2": ("SC", "SST-2"), "mnli": ("NLI", "MNLI"), "cb": ("NLI", "CB"),
    "rte": ("NLI", "RTE"), "qqp": ("QQP", "QQP"), "wic": ("WiC", "WiC"),
    "copa": ("COPA", "COPA"), "boolqa": ("BoolQA", "BoolQA"), "multirc": ("MultiRC", "MultiRC"),
}

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="/work/shared/data is absent")


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def _build_olora_copy(root: Path, tasks, flat: bool = False, instances: bool = False) -> None:
    """Reverse the template on the first records of every split of the real files."""
    for task in tasks:
        category, folder_name = OLORA_FOLDERS[task]
        folder = root / folder_name if flat else root / category / folder_name
        labels = None
        for split in ("train", "dev", "test"):
            raw = json.loads((LONG / split / f"{task}_T5.json").read_text(encoding="utf-8"))
            records = []
            for rec in raw[:N_PER_SPLIT]:
                instruction, options, sentence = olora.split_input(rec["input"])
                assert instruction == olora.CATEGORY_INSTRUCTIONS[olora.TASK_CATEGORY[task]]
                assert labels in (None, options)
                labels = options
                if instances:
                    records.append({"input": sentence, "output": rec["output"]})
                else:
                    records.append({"sentence": sentence, "label": rec["output"]})
            _dump(folder / f"{split}.json", {"Instances": records} if instances else records)
        _dump(folder / "labels.json", labels)


@pytest.fixture(scope="module")
def olora_copy(tmp_path_factory) -> Path:
    if not DATA.is_dir():
        pytest.skip("/work/shared/data is absent")
    root = tmp_path_factory.mktemp("CL_Benchmark")
    _build_olora_copy(root, OLORA_FOLDERS)
    return root


@needs_data
def test_layout_and_task_names(olora_copy: Path) -> None:
    assert detect_layout(olora_copy) == "olora"
    tasks = list_tasks(olora_copy)
    assert sorted(tasks) == sorted(set(ORDERS[4]))
    assert tasks["sst-2"]["test"] == olora_copy / "SC" / "SST-2" / "test.json"


@needs_data
@pytest.mark.parametrize("split", ["train", "dev", "test"])
@pytest.mark.parametrize("task", sorted(OLORA_FOLDERS))
def test_olora_records_equal_aimmerging_records(olora_copy: Path, task: str, split: str) -> None:
    expected = load_split(LONG, task, split)[:N_PER_SPLIT]
    assert load_split(olora_copy, task, split) == expected


@needs_data
def test_spellings_work_in_olora_layout(olora_copy: Path) -> None:
    assert load_split(olora_copy, "sst2", "dev") == load_split(LONG, "SST-2", "dev")[:N_PER_SPLIT]
    assert load_split(olora_copy, "boolq", "dev")[0].id == "BoolQA_0"


@needs_data
def test_flat_folders_and_instances_files(tmp_path: Path) -> None:
    _build_olora_copy(tmp_path, ["agnews", "copa", "wic"], flat=True, instances=True)
    assert detect_layout(tmp_path) == "olora"
    for task in ("agnews", "copa", "wic"):
        assert load_split(tmp_path, task, "train") == load_split(LONG, task, "train")[:N_PER_SPLIT]


def test_build_input_matches_template() -> None:
    text = olora.build_input("agnews", "Title: t\nText: x\n", ["World", "Sports"])
    assert text == (
        "What is the topic of the following paragraph? Choose one from the option. "
        "Option: World, Sports.\nTitle: t\nText: x\n\nAnswer:"
    )
    assert olora.split_input(text)[1:] == (["World", "Sports"], "Title: t\nText: x\n")
    with pytest.raises(ValueError):
        olora.split_input("no answer cue")


def _tiny_task(root: Path, category: str, name: str, records, labels=("yes", "no")) -> Path:
    folder = root / category / name
    for split in ("train", "test"):
        _dump(folder / f"{split}.json", records)
    if labels is not None:
        _dump(folder / "labels.json", list(labels))
    return folder


def test_unknown_task_uses_its_category_instruction(tmp_path: Path) -> None:
    _tiny_task(tmp_path, "SC", "MyReviews", [{"sentence": "great", "label": "yes"}])
    (example,) = load_split(tmp_path, "myreviews", "train")
    assert example.id == "MyReviews_0"
    assert example.input == (
        olora.CATEGORY_INSTRUCTIONS["SC"] + "Option: yes, no.\ngreat\nAnswer:"
    )
    assert example.output == "yes"


def test_unknown_task_in_unknown_category(tmp_path: Path) -> None:
    _tiny_task(tmp_path, "Misc", "thing", [{"sentence": "s", "label": "yes"}])
    with pytest.raises(DataError, match="no instruction template for task 'thing'"):
        load_split(tmp_path, "thing", "train")


def test_olora_errors_name_file_index_and_field(tmp_path: Path) -> None:
    folder = _tiny_task(
        tmp_path, "TC", "agnews", [{"sentence": "a", "label": "yes"}, {"sentence": "b"}]
    )
    with pytest.raises(DataError) as info:
        load_split(tmp_path, "agnews", "train")
    assert str(info.value) == f"{folder / 'train.json'}: record 1: missing field 'label'"

    _dump(folder / "train.json", [{"sentence": 3, "label": "yes"}])
    with pytest.raises(DataError, match="record 0: field 'sentence' must be a string, got int"):
        load_split(tmp_path, "agnews", "train")

    (folder / "labels.json").unlink()
    with pytest.raises(DataError, match="labels.json: labels file not found"):
        load_split(tmp_path, "agnews", "test")

    _dump(folder / "labels.json", [])
    with pytest.raises(DataError, match="non-empty JSON list of label strings"):
        load_split(tmp_path, "agnews", "test")

    with pytest.raises(DataError, match="missing dev split"):
        load_split(tmp_path, "agnews", "dev")
