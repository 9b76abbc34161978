"""scripts/gpu_check.sh without a GPU: its syntax, its arguments, and a dry run whose CUDA steps
are reported as skipped while the CPU can check the plumbing (the tests, a smoke run)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch

from runhelp import ROOT, env

SCRIPTS = [ROOT / "scripts" / "gpu_check.sh", ROOT / "scripts" / "gpu_wheels.sh"]
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and timeout")


def _script(*args, timeout=240):
    return subprocess.run(["bash", str(SCRIPTS[0]), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env(PYTHON=sys.executable))


def test_the_scripts_parse():
    for path in SCRIPTS:
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_help_and_a_bad_argument():
    assert "--dry-run" in _script("--help").stdout
    bad = _script("--nope")
    assert bad.returncode == 2 and "unknown argument --nope" in bad.stderr


@pytest.mark.timeout(300)
def test_a_dry_run_skips_the_cuda_steps_cleanly(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: run the check itself")
    proc = _script("--dry-run", "--out", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "summary.md").read_text()
    assert summary in proc.stdout
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in summary.splitlines() if line.startswith("| ") and "---" not in line}
    for step in ("CUDA tests", "bf16 smoke run", "fp16 smoke run", "fp16 gradient check",
                 "throughput vs Trainer", "2-GPU torchrun (NCCL)"):
        assert rows[step] == "SKIPPED (dry run)", step
    assert rows["smoke run on the CPU (float32, instead)"] == "ok"
    assert "skipped" in summary.split("| CUDA tests |")[1].splitlines()[0]
