"""scripts/cpu_small_study.sh: its plan's order, the skipping of finished runs, and the code
commit it logs (with a stand-in `aimmerging` that only writes metrics.json)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ["aimmerging", "replay", "fixed_interval"]
OTHER = ["aimmerging_reference", "seq_lora", "recurrent_kif", "single_task"]
EXTRA = ["inc_lora", "o_lora", "moe_lora", "single_merge"]

pytestmark = pytest.mark.skipif(sys.platform == "win32" or shutil.which("git") is None,
                                reason="needs bash and git")


def _checkout(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "cpu_small_study.sh", repo / "scripts")
    code = tmp_path / "code"
    (code / "src" / "aimmerging").mkdir(parents=True)
    (code / "src" / "aimmerging" / "__init__.py").write_text("")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(code)]
    subprocess.run(["git", "init", "-q", str(code)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "code"], check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "aimmerging"              # writes the run's metrics.json, as a run ends
    fake.write_text('#!/bin/bash\nwhile [ "$1" != --output ]; do shift; done\n'
                    'mkdir -p "$2" && echo "{}" > "$2/metrics.json"\n'
                    'echo "$PYTHONPATH" > "$2/pythonpath"\n'
                    'echo "$ATEN_CPU_CAPABILITY" > "$2/kernels"\n')
    fake.chmod(0o755)
    return repo, code


def _run(repo: Path, code: Path, tmp_path: Path) -> list[tuple[str, int, str]]:
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "STUDY_CODE": str(code)}
    for name in ("STUDY_METHODS", "STUDY_SEEDS", "ATEN_CPU_CAPABILITY"):
        env.pop(name, None)
    subprocess.run(["bash", str(repo / "scripts" / "cpu_small_study.sh"), "1"], check=True,
                   env=env, timeout=120)
    log = (repo / "runs" / "cpu_small" / "study.log").read_text()
    return [(m, int(s), rev) for m, s, rev in
            re.findall(r"start (\S+) seed (\d+) \(code (\S+), kernels avx2\)", log)]


def test_the_core_comparison_has_its_three_seeds_first(tmp_path):
    repo, code = _checkout(tmp_path)
    done = repo / "runs" / "cpu_small" / "replay" / "seed42"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")                    # finished: skipped
    starts = _run(repo, code, tmp_path)
    plan = ([(m, 42) for m in ("aimmerging", "replay", "aimmerging_reference", "fixed_interval")]
            + [(m, s) for s in (43, 44) for m in CORE]
            + [(m, 42) for m in (*EXTRA, "seq_lora", "recurrent_kif", "single_task")]
            + [(m, s) for s in (43, 44) for m in OTHER] + [(m, s) for s in (43, 44) for m in EXTRA])
    assert len(set(plan)) == 33 == len(plan)
    plan.remove(("replay", 42))
    assert [(m, s) for m, s, _ in starts] == plan
    rev = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert {r for _, _, r in starts} == {rev}
    run = repo / "runs" / "cpu_small" / "aimmerging" / "seed43"
    assert (run / "pythonpath").read_text().strip() == str(code / "src")
    assert (run / "kernels").read_text().strip() == "avx2"      # PyTorch's AVX2 kernels, pinned
    assert _run(repo, code, tmp_path) == starts                 # all finished: nothing new
