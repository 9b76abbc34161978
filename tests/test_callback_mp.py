"""AIMMergingCallback under two processes (torchrun, gloo on CPU): every rank takes the same
decisions, holds the same parameters after every merge; the trace is written once."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runhelp import ROOT, env

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not available")
@pytest.mark.timeout(400)
def test_every_rank_merges_alike(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([TORCHRUN, "--nproc_per_node", "2", "--master_port", str(port),
                           str(ROOT / "tests" / "mp_callback.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=360, cwd=ROOT, env=env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert [m["row"]["step"] for m in r0["merges"]] == [4, 8]
    assert r0["merges"][-1]["row"]["alpha_past"] > 0          # the last merge fuses a rehearsal
    assert r0["merges"] == r1["merges"]                        # same records, same parameters
    assert len({m["hash"] for m in r0["merges"]}) == 2
    assert r0["signals"] == r1["signals"] and r0["final_hash"] == r1["final_hash"]
    assert all(s["history_loss"] is not None for s in r0["signals"] if s["stage"] == 2)
    rows = (tmp_path / "run" / "demo_topic" / "merge_trace.csv").read_text().splitlines()
    assert len(rows) == 3                                      # header and the two merges
