"""Tasks given by their files (docs/data.md): JSON Lines, JSON, CSV/TSV and datasets folders,
the task mapping's validation, one-line errors, and such tasks in a run's stream."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from datapaths import DATA_ROOT

from aimmerging.config import build_config, dump_config, load_config
from aimmerging.data.custom import load_custom_task, load_role
from aimmerging.data.spec import TaskSpec, task_spec
from aimmerging.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
LONG = DATA_ROOT / "data_longsequence"
needs_data = pytest.mark.skipif(not LONG.is_dir(), reason="benchmark data is absent")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _qa(n: int, start: int = 0) -> list[dict]:
    return [{"q": f"question {i}", "a": "yes" if i % 2 else "no", "key": f"k{i}"}
            for i in range(start, start + n)]


def _spec(**keys) -> TaskSpec:
    return task_spec({"name": "mine", "input": "q", "output": "a", "metric": "accuracy", **keys}, 0)


def test_each_file_type_gives_the_same_examples(tmp_path: Path) -> None:
    rows = _qa(6)
    files = {
        "jsonl": _jsonl(tmp_path / "t.jsonl", rows),
        "json": tmp_path / "t.json",
        "csv": _csv(tmp_path / "t.csv", ["q", "a", "key"], [[r["q"], r["a"], r["key"]] for r in rows]),
        "tsv": _csv(tmp_path / "t.tsv", ["q", "a", "key"], [[r["q"], r["a"], r["key"]] for r in rows],
                    delimiter="\t"),
    }
    files["json"].write_text(json.dumps(rows), encoding="utf-8")
    expected = [(f"k{i}", f"question {i}", "yes" if i % 2 else "no") for i in range(6)]
    for kind, path in files.items():
        examples = load_role(_spec(train=str(path), id="key"), "train")
        assert [(e.id, e.input, e.output) for e in examples] == expected, kind


def test_template_numbers_and_default_ids(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"doc": "a cat", "n": 3, "label": 1, "ok": True}])
    spec = task_spec({"name": "s", "train": str(path), "output": "label", "metric": "em",
                      "template": "Doc: {doc} ({n}, {ok}) {{x}}\nAnswer:"}, 0)
    assert spec.metric == "accuracy" and spec.columns() == ["doc", "n", "ok", "label"]
    [example] = load_role(spec, "train")
    assert (example.id, example.input, example.output) == ("s_0", "Doc: a cat (3, True) {x}\nAnswer:", "1")


@pytest.mark.parametrize("entry, message", [
    ({"inptu": "q"}, r"data.tasks\[0\] \(mine\): inptu: unknown key \(known: name, train"),
    ({"metric": "bleu"}, r"metric: unknown metric 'bleu'"),
    ({"template": "Q: {q.upper}"}, r"template: \{q.upper\} is not a plain column placeholder"),
    ({"template": "Q: {}"}, r"template: a placeholder must name a column"),
    ({"train": {"path": "a", "hub": "b"}}, r"train: give exactly one of path and hub"),
    ({"train": {"path": "a", "splt": "x"}}, r"train.splt: unknown key"),
    ({"name": "a/b"}, r"name 'a/b': use letters"),
    ({"output": ""}, r"output: empty column name"),
])
def test_task_mapping_is_validated(entry: dict, message: str) -> None:
    raw = {"name": "mine", "train": "t.jsonl", "input": "q", "output": "a", "metric": "accuracy", **entry}
    with pytest.raises(ValueError, match=message):
        task_spec(raw, 0)
    with pytest.raises(ConfigError, match=r"^x.yaml: data.tasks\[1\]"):
        build_config({"data": {"tasks": ["dbpedia", raw]}}, "x.yaml")


def test_rouge_l_alias_and_refused_entries() -> None:
    assert _spec(train="t.jsonl", metric="rouge_l").metric == "rougeL"
    with pytest.raises(ConfigError, match=r"data.tasks\[0\]: expected a task name or a mapping"):
        build_config({"data": {"tasks": [5]}})
    with pytest.raises(ConfigError, match=r"data.tasks\[1\] \(mine\): train: missing key"):
        build_config({"data": {"tasks": ["dbpedia", {"name": "mine", "input": "q"}]}})


def test_defaults_read_input_and_output_columns(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"input": "2+2=", "output": "4"}])
    spec = task_spec({"name": "plain", "train": str(path)}, 0)
    assert (spec.metric, spec.columns()) == ("accuracy", ["input", "output"])
    assert [(e.input, e.output) for e in load_role(spec, "train")] == [("2+2=", "4")]
    templated = task_spec({"name": "t", "train": str(path), "template": "Q: {input}"}, 0)
    assert templated.columns() == ["input", "output"] and templated.input_column is None


@pytest.mark.parametrize("content, suffix, message", [
    ('{"q": "x", "a": "y"}\n{"q": "z"}\n', ".jsonl", r"t.jsonl: record 1 \(line 2\): missing field 'a'"),
    ('{"q": "x", "a": ""}\n', ".jsonl", r"t.jsonl: record 0 \(line 1\): field 'a' is empty"),
    ('{"q": "  ", "a": "b"}\n', ".jsonl", r"record 0 \(line 1\): field 'q' is empty"),
    ('{"q": "x", "a": null}\n', ".jsonl", r"record 0 \(line 1\): field 'a' is empty \(null\)"),
    ('{"q": "x", "a": ["b"]}\n', ".jsonl", r"field 'a' must be text, got a list"),
    ('{"q": "x", "a": "b"}\n{"q": \n', ".jsonl", r"t.jsonl: line 2: invalid JSON"),
    ('[1]', ".json", r"t.json: record 0: expected an object of columns, got int"),
    ('{"rows": []}', ".json", r"expected a JSON list of records"),
    ("q,a\nx,y\nz\n", ".csv", r"t.csv: record 1 \(line 3\): field 'a' is empty \(null\)"),
    ("q,a\nx,y,w\n", ".csv", r"t.csv: record 0 \(line 2\): 3 cells, but the header names 2"),
    ("q,b\nx,y\n", ".csv", r"t.csv: record 0 \(line 2\): missing field 'a'"),
    ("", ".jsonl", r"t.jsonl: file is empty"),
    ("q,a\n", ".csv", r"t.csv: no records"),
    ("x", ".txt", r"t.txt: unknown file type '.txt'"),
])
def test_bad_records_name_file_record_and_field(tmp_path: Path, content: str, suffix: str,
                                                message: str) -> None:
    path = tmp_path / f"t{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        load_role(_spec(train=str(path)), "train")
    assert "\n" not in str(info.value)


def test_ids_must_be_there_and_unique(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"q": "a", "a": "b", "key": "x"}, {"q": "c", "a": "d", "key": "x"}])
    with pytest.raises(DataError, match=r"record 1 \(line 2, id 'x'\): field 'key': id 'x' is also record 0"):
        load_role(_spec(train=str(path), id="key"), "train")


def test_unreadable_and_missing_files(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "t.jsonl"
    bad.write_bytes(b'{"q": "\xff"}\n')
    with pytest.raises(DataError, match=r"t.jsonl: not UTF-8 text"):
        load_role(_spec(train=str(bad)), "train")
    monkeypatch.chdir(tmp_path)          # a relative path counts from the current folder, and says so
    with pytest.raises(DataError, match=rf"^nope.jsonl \(relative to {tmp_path}\): file not found$"):
        load_role(_spec(train="nope.jsonl"), "train")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"folder .*: no train file \(train.jsonl"):
        load_role(_spec(train="folder"), "train")


def test_a_folder_of_split_files(tmp_path: Path) -> None:
    _jsonl(tmp_path / "d" / "train.jsonl", _qa(10))
    _csv(tmp_path / "d" / "validation.csv", ["q", "a"], [["dev q", "no"]])
    _jsonl(tmp_path / "d" / "test.jsonl", _qa(4, 100))
    spec = _spec(train=str(tmp_path / "d"))
    task = load_custom_task(spec, 6, None, seed=0)
    assert len(task.train) == 6 and [e.input for e in task.test] == [f"question {i}" for i in range(100, 104)]
    dev = load_custom_task(spec, 6, None, seed=0, split="dev")
    assert dev.source == "dev file" and [e.input for e in dev.test] == ["dev q"]
    assert dev.train == task.train
    (tmp_path / "d" / "test.csv").write_text("q,a\nx,y\n")
    with pytest.raises(DataError, match=r"test.jsonl and test.csv both hold the test split"):
        load_custom_task(spec, 6, None, seed=0)


def test_test_is_optional_only_for_dev(tmp_path: Path) -> None:
    spec = _spec(train=str(_jsonl(tmp_path / "t.jsonl", _qa(10))))
    with pytest.raises(ConfigError, match=r"task mine: no test records: give test: FILE, or .*eval.split: dev"):
        load_custom_task(spec, 4, 2, seed=0)
    task = load_custom_task(spec, 4, 2, seed=0, split="dev")
    assert task.source == "held out from the train file" and len(task.test) == 2


def test_datasets_folders(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = _qa(12)
    train = datasets.Dataset.from_list(rows)
    test = datasets.Dataset.from_list(_qa(4, 50))
    datasets.DatasetDict({"train": train, "validation": datasets.Dataset.from_list(_qa(3, 80)),
                          "test": test}).save_to_disk(str(tmp_path / "dict"))
    train.save_to_disk(str(tmp_path / "single"))
    spec = _spec(train=str(tmp_path / "dict"), id="key")
    task = load_custom_task(spec, 8, None, seed=0)
    assert len(task.train) == 8 and [e.id for e in task.test] == ["k50", "k51", "k52", "k53"]
    assert [e.id for e in load_custom_task(spec, 8, None, 0, "dev").test] == ["k80", "k81", "k82"]
    one = load_role(_spec(train=str(tmp_path / "single"), id="key"), "train")
    assert [e.id for e in one] == [r["key"] for r in rows]
    picked = _spec(train={"path": str(tmp_path / "dict"), "split": "validation"}, id="key")
    assert [e.id for e in load_role(picked, "train")] == ["k80", "k81", "k82"]
    with pytest.raises(DataError, match=r"dict: no tests split \(splits: train, validation, test\)"):
        load_role(_spec(train={"path": str(tmp_path / "dict"), "split": "tests"}), "train")
    with pytest.raises(DataError, match=r"dict \(split train\): no column 'question' \(columns: q, a, key\)"):
        load_role(task_spec({"name": "m", "train": str(tmp_path / "dict"), "input": "question",
                             "output": "a", "metric": "accuracy"}, 0), "train")


def test_hub_names_go_through_datasets_load_dataset(tmp_path: Path, monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls = []

    def load_dataset(name, subset=None, split=None):      # the hub is not reached in tests
        calls.append((name, subset, split))
        if split not in ("train", "test"):
            raise ValueError(f'Unknown split "{split}". Should be one of [\'train\', \'test\'].')
        return datasets.Dataset.from_list(_qa(6 if split == "train" else 2, 0 if split == "train" else 40))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = load_custom_task(_spec(train="hf:someone/qa"), 4, None, seed=0, split="dev")
    assert calls[0] == ("someone/qa", None, "train")
    assert [c[2] for c in calls[1:]] == ["test", "validation", "dev", "valid", "val"]
    assert task.source == "held out from the train file"
    task = load_custom_task(_spec(train={"hub": "someone/qa", "subset": "en", "split": "train"}),
                            4, None, seed=0)
    assert ("someone/qa", "en", "test") in calls and len(task.test) == 2


def test_missing_datasets_package_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    import aimmerging.data.sources as sources

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    monkeypatch.setattr(sources, "_datasets", lambda: None)
    with pytest.raises(DataError, match=r'datasets package is not installed: pip install "aimmerging\[datasets\]"'):
        load_role(_spec(train=str(tmp_path / "ds")), "train")


def test_saved_task_mappings_compare_equal(tmp_path: Path, monkeypatch) -> None:
    from aimmerging.rundir import config_differences

    monkeypatch.chdir(tmp_path)
    raw = {"data": {"tasks": ["dbpedia", {"name": "mine", "train": "a/t.jsonl", "test":
                                          {"path": "./a/../a/u.csv"}, "input": "q", "output": "a",
                                          "metric": "acc"}]}}
    cfg = build_config(raw)
    saved = yaml_round_trip(dump_config(cfg))
    assert build_config(saved) == cfg and config_differences(saved, cfg) == []
    absolute = build_config({"data": {"tasks": ["dbpedia", {**raw["data"]["tasks"][1], "train":
                                                            str(tmp_path / "a" / "t.jsonl")}]}})
    assert config_differences(saved, absolute) == []
    other = build_config({"data": {"tasks": ["dbpedia", {**raw["data"]["tasks"][1], "output": "b"}]}})
    assert [d[0] for d in config_differences(saved, other)] == ["data.tasks"]
    names = build_config({"data": {"tasks": ["dbpedia", "amazon"]}})
    assert config_differences({"data": {"tasks": ["dbpedia", "amazon"]}}, names) == []


def yaml_round_trip(text: str):
    import yaml

    return yaml.safe_load(text)


def test_a_task_name_twice_is_refused_naming_the_config_file(tmp_path: Path) -> None:
    from aimmerging.config import load_config

    path = tmp_path / "stream.yaml"
    path.write_text("data:\n  tasks:\n    - demo_topic\n"
                    "    - {name: Demo_Topic, train: x, input: q, output: a, metric: accuracy}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: data.tasks[1]: task 'demo_topic' is also data.tasks[0]; "
                              f"every task needs its own name")
    with pytest.raises(ConfigError, match=r"data.tasks\[1\]: task 'agnews' is also"):
        build_config({"data": {"tasks": ["agnews", "AG News"]}})


@needs_data
def test_mixed_stream_with_a_benchmark_task(tmp_path: Path) -> None:
    from aimmerging.runner import load_tasks, task_order

    train = _jsonl(tmp_path / "train.jsonl", _qa(20))
    test = _csv(tmp_path / "test.csv", ["q", "a"], [["question x", "yes"], ["question y", "no"]])
    cfg = build_config({"data": {"dir": str(LONG), "n_train": 8, "n_test": 4, "tasks": [
        "dbpedia", {"name": "mine", "train": str(train), "test": str(test), "input": "q",
                    "output": "a", "metric": "accuracy"}]}})
    assert task_order(cfg) == ["dbpedia", "mine"]
    tasks = load_tasks(cfg)
    assert [t.info.name for t in tasks] == ["dbpedia", "mine"]
    assert tasks[0].info.benchmark == "standard_cl" and tasks[1].info.benchmark == "custom"
    assert [e.input for e in tasks[1].test] == ["question x", "question y"] and len(tasks[1].train) == 8


def test_data_check_and_show_on_a_config(tmp_path: Path, capsys) -> None:
    from aimmerging.cli import main

    train = _jsonl(tmp_path / "train.jsonl", _qa(10))
    bad = tmp_path / "test.csv"
    bad.write_text("q,a\nx,\n")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"data": {"n_train": 4, "tasks": [
        {"name": "mine", "train": str(train), "test": str(bad), "input": "q", "output": "a",
         "metric": "accuracy"}]}}))
    capsys.readouterr()
    assert main(["data", "check", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[2].split() == ["mine", "custom", "accuracy", "10", "-", "ERROR",
                                                    "ERROR", "ERROR"]
    assert captured.err.strip() == f"error: {bad}: record 0 (line 2): field 'a' is empty"
    assert main(["data", "show", str(config), "mine", "--limit", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": "mine_0", "input": "question 0", "output": "no"}


def test_user_tasks_config_checks_clean(capsys, monkeypatch) -> None:
    from aimmerging.cli import main

    monkeypatch.chdir(REPO)                          # its paths count from the repository root
    assert main(["data", "check", "configs/user_tasks.yaml"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:4]]
    assert rows == [["support", "custom", "accuracy", "40", "-", "16", "32", "12"],
                    ["summaries", "custom", "rougeL", "32", "-", "12", "32", "12"]]
    cfg = load_config("configs/user_tasks.yaml")
    assert [t.name for t in cfg.data.tasks] == ["support", "summaries"]
