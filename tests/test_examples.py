"""The runnable examples under examples/ (tiny models only)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from runhelp import ROOT, env


@pytest.mark.timeout(600)
def test_hf_trainer_example_merges_in_the_second_task(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "hf_trainer.py"), "--model",
                           "tiny-llama", "--output", str(tmp_path), "--threads", "1"],
                          capture_output=True, text=True,
                          timeout=540, cwd=ROOT, env=env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "merge_trace.csv", newline="", encoding="utf-8") as fh:
        merges = list(csv.DictReader(fh))
    assert merges and {m["task"] for m in merges} == {"demo_topic"}
    assert any(float(m["alpha_past"]) > 0 for m in merges)
    assert f"{len(merges)} merges in" in proc.stdout and "after demo_topic: accuracy" in proc.stdout
    assert (tmp_path / "signals.csv").read_text().count("\n") == 1 + 2 * 24
