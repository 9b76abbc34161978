"""`data check` and `data show` through a small argparse parser, as the lead's CLI wires them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from datapaths import DATA_ROOT

from aimmerging.cli_data import add_data_parser, format_table
from aimmerging.errors import DataError

DATA = DATA_ROOT
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="/work/shared/data is absent")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aimmerging")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _small(root: Path) -> Path:
    for split in ("train", "dev", "test"):
        (root / split).mkdir(parents=True)
        records = [
            {"id": f"rte_{i}", "input": f"premise {i}\nAnswer:", "output": "entailment"}
            for i in range(3 if split == "train" else 2)
        ]
        (root / split / "rte_T5.json").write_text(json.dumps(records))
    return root


def test_check_prints_counts(tmp_path: Path, capsys) -> None:
    root = _small(tmp_path / "d")
    assert _run(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["task", "benchmark", "metric", "train", "dev", "test"]
    assert out[2].split() == ["rte", "long_sequence", "accuracy", "3", "2", "2"]
    assert out[-1] == "1 tasks, 0 problem(s)"
    for split in ("train", "test"):                       # a task of the user's own: exact match
        (root / split / "mine.json").write_text(json.dumps([{"id": "m", "input": "q", "output": "a"}]))
    assert _run(["data", "check", str(root)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["mine", "custom", "accuracy", "1", "-", "1"] in rows


def test_check_reports_each_bad_file(tmp_path: Path, capsys) -> None:
    root = _small(tmp_path / "d")
    (root / "dev" / "rte_T5.json").write_text('[{"id": "a", "inp')
    (root / "test" / "rte_T5.json").write_text("[]")
    (root / "train" / "extra.json").write_text(json.dumps([{"id": "e", "input": "x", "output": "y"}]))
    assert _run(["data", "check", str(root)]) == 2
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert len(errors) == 3
    assert all(e.startswith(f"error: {root}") for e in errors)
    assert any("truncated JSON" in e and "rte_T5.json" in e for e in errors)
    assert any("empty list" in e for e in errors)
    assert any("task 'extra' has no test split" in e for e in errors)
    assert "ERROR" in captured.out


def test_check_missing_folder_raises_data_error(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        _run(["data", "check", str(tmp_path / "missing")])
    monkeypatch.chdir(tmp_path)             # a relative path: the error says where it counts from
    with pytest.raises(DataError, match=rf"missing \(relative to {tmp_path}\): data folder not found"):
        _run(["data", "check", "missing"])


def test_show_json_lines(tmp_path: Path, capsys) -> None:
    root = _small(tmp_path / "d")
    assert _run(["data", "show", str(root), "RTE", "--split", "train", "--limit", "2", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": "rte_0", "input": "premise 0\nAnswer:", "output": "entailment"},
        {"id": "rte_1", "input": "premise 1\nAnswer:", "output": "entailment"},
    ]


def test_show_readable_and_all(tmp_path: Path, capsys) -> None:
    root = _small(tmp_path / "d")
    assert _run(["data", "show", str(root), "rte", "--limit", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== [") == 3 and "premise 2\nAnswer:" in out and '"entailment"' in out


@needs_data
def test_check_and_show_real_data(capsys) -> None:
    assert _run(["data", "check", str(DATA)]) == 0
    out = capsys.readouterr().out
    assert "30 tasks, 0 problem(s)" in out
    assert _run(["data", "show", str(DATA / "data_longsequence"), "sst2", "--split", "test",
                 "--limit", "1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["id"] == "SST-2_0" and record["input"].endswith("\nAnswer:")


def test_format_table_alignment() -> None:
    table = format_table(["task", "n"], [["a", "5"], ["long", "100"]])
    assert table.splitlines() == ["task    n", "----  ---", "a       5", "long  100"]


def test_check_of_a_config_takes_set_and_names_a_missing_file_once(tmp_path: Path, capsys) -> None:
    from aimmerging.errors import ConfigError

    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"q": f"q{i}", "a": "yes"}) + "\n" for i in range(4)))
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  tasks:\n    - {name: t, train: %s, test: %s, input: q, output: a}\n"
                      % (tmp_path / "missing.jsonl", good))
    assert _run(["data", "check", str(config)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"error: {tmp_path / 'missing.jsonl'}: file not found"]   # not once per split
    fixed = f"data.tasks=[{{name: t, train: {good}, test: {good}, input: q, output: a}}]"
    assert _run(["data", "check", str(config), "--set", fixed]) == 0
    out = capsys.readouterr().out.splitlines()
    assert ["t", "custom", "accuracy", "4", "-", "4", "4", "4"] in [line.split() for line in out]
    assert "note: data.tasks: task t: 4 of 4 test records have the input of a train record, " \
           "so their scores measure memorisation" in out             # the same file twice
    with pytest.raises(ConfigError, match="is a data folder"):
        _run(["data", "check", str(tmp_path), "--set", "seed=1"])
