"""`aimmerging run` end to end on a JSON Lines and a CSV task of a user's own (tiny-llama)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import os
import subprocess
import sys

import runhelp
import yaml
from runhelp import check_ok


def _write_tasks(folder: Path) -> None:
    """A JSON Lines task (train and test files) and a CSV task (a folder of train.csv, test.csv)."""
    (folder / "echo").mkdir(parents=True)
    colours = ["red", "blue", "green"]
    for name, n, word in (("colours.jsonl", 30, "c"), ("colours_test.jsonl", 9, "t")):
        with (folder / name).open("w") as f:
            for i in range(n):
                f.write(json.dumps({"text": f"Ball {word}{i} is {colours[i % 3]}.",
                                    "label": colours[i % 3], "uid": f"{word}{i}"}) + "\n")
    for name, rows in (("train", range(24)), ("test", range(100, 108))):
        with (folder / "echo" / f"{name}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["word", "copy"])
            w.writerows([[f"word{i}", f"word{i} word{i}"] for i in rows])


def _aimmerging(*args, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m aimmerging ARGS`` run from ``cwd`` (the config's relative paths count from it)."""
    env = runhelp.env(PYTHONPATH=os.pathsep.join([str(runhelp.ROOT / "src"),
                                                  os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "aimmerging", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _config(folder: Path, split: str = "test") -> Path:
    config = {
        "seed": 1,
        "data": {"n_train": 12, "n_test": 6, "max_input_tokens": 32, "max_target_tokens": 6,
                 "tasks": [
                     {"name": "colours", "train": "data/colours.jsonl", "test": "data/colours_test.jsonl",
                      "input": "text", "output": "label", "id": "uid", "metric": "accuracy"},
                     {"name": "echo", "train": "data/echo", "output": "copy", "metric": "rouge_l",
                      "template": "Repeat twice: {word}\nAnswer:"}]},
        "model": {"name": "tiny-llama"},
        "method": {"name": "aimmerging", "memory_size": 4, "s_init": 2},
        "train": {"epochs": 1, "batch_size": 4, "lr": 3.0e-3},
        "eval": {"split": split, "batch_size": 8, "max_new_tokens": 4},
    }
    path = folder / f"tasks_{split}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_jsonl_and_csv_tasks_run_end_to_end(tmp_path: Path) -> None:
    _write_tasks(tmp_path / "data")
    config = _config(tmp_path)
    out = tmp_path / "run"
    proc = _aimmerging("run", config, "--output", out, "--quiet", "--threads", "1", cwd=tmp_path)
    check_ok(proc)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"] == ["colours", "echo"] and len(metrics["accuracy_matrix"]) == 2
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["tasks"][1]["template"] == "Repeat twice: {word}\nAnswer:"
    with (out / "example_scores.csv").open() as f:
        ids = {row["id"] for row in csv.DictReader(f) if row["task"] == "colours"}
    assert len(ids) == 6 and ids <= {f"t{i}" for i in range(9)}     # 6 of the test file's 9
    log = (out / "run.log").read_text()
    assert "scored on eval.split test (test file)" in log
    again = _aimmerging("run", config, "--output", out, "--resume", "--quiet", cwd=tmp_path)
    check_ok(again)                                      # its own config: resumed, nothing refused

    dev = _aimmerging("run", _config(tmp_path, "dev"), "--output", tmp_path / "dev", "--quiet",
                     "--threads", "1", cwd=tmp_path)
    check_ok(dev)
    with (tmp_path / "dev" / "example_scores.csv").open() as f:
        dev_ids = {row["id"] for row in csv.DictReader(f) if row["task"] == "colours"}
    assert len(dev_ids) == 6 and dev_ids <= {f"c{i}" for i in range(30)}   # from the train file
    assert "held out from the train file" in (tmp_path / "dev" / "run.log").read_text()


def test_task_files_are_found_beside_the_config_file(tmp_path, monkeypatch):
    from aimmerging.config import load_config

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.jsonl").write_text('{"input": "a", "output": "b"}\n')
    (project / "cfg.yaml").write_text(
        "data:\n  tasks:\n    - {name: t, train: data/train.jsonl, test: {path: data/train.jsonl}}\n"
        "    - {name: u, train: hf:user/set}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(project / "cfg.yaml")
    first = cfg.data.tasks[0]
    assert first.train == str(project / "data" / "train.jsonl")
    assert first.test.path == str(project / "data" / "train.jsonl")
    assert cfg.data.tasks[1].train == "hf:user/set"              # hub names are left alone
    (elsewhere / "data").mkdir()                                 # found from the current folder first
    (elsewhere / "data" / "train.jsonl").write_text('{"input": "a", "output": "b"}\n')
    assert load_config(project / "cfg.yaml").data.tasks[0].train == "data/train.jsonl"
