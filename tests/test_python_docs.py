"""docs/python.md: every Python snippet runs, in order, in one namespace (as a notebook would),
from a folder holding the repository's configs/."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from runhelp import ROOT

DOC = ROOT / "docs" / "python.md"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.timeout(900)
def test_every_snippet_runs(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    blocks = snippets()
    assert len(blocks) == 8
    space: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name} snippet {i + 1}", "exec"), space)
    metrics, rows = space["metrics"], space["rows"]
    assert len(metrics["accuracy_matrix"]) == 2 and metrics["merges"] >= 1
    assert [r["method"] for r in rows] == ["seq_lora", "aimmerging"]
    out = capsys.readouterr().out
    assert "train.epochs: Input should be greater than or equal to 1" in out
    assert "task,stage,step,interval_run" in out and "demo_topic" in out
    assert space["check"].checked >= 1
    assert "\n4 0.6 0.4 2 4\n" in out       # the controller alone: one merge at step 4
    assert (tmp_path / "runs" / "py_demo" / "metrics.json").is_file()
    names = [t.info.name for t in space["tasks"]]
    assert space["callback"].memory.tasks == names and space["callback"].traces.merges
    # started again: the saved tasks are loaded and skipped, the weights put back
    resumable = next(i for i, code in enumerate(blocks) if "py_resumable" in code)
    again = dict(space, model=space["add_lora"](space["load_backbone"]("tiny-llama")))
    exec(compile(blocks[resumable], "restart", "exec"), again)
    assert again["callback"].memory.tasks == names and again["callback"].task["index"] == 1
    saved = space["snapshot"](space["model"])
    assert all(torch.equal(v, again["snapshot"](again["model"])[k]) for k, v in saved.items())
