"""Ctrl-C (SIGINT) or SIGTERM (``kill``, ``timeout``, job schedulers) in the middle of a run
names the last checkpoint and the exact --resume command."""

import shlex
import signal
import time

import pytest
from runhelp import SMALL, SMOKE, aimmerging, check_ok, needs_data, popen, sets


@needs_data
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_prints_and_logs_the_resume_command(tmp_path, sig, code):
    out = tmp_path / "run"
    items = SMALL + ["train.checkpoint_every=2", "data.n_train=48", "train.epochs=3"]
    proc = popen("run", SMOKE, *sets(items), "--output", out, "--quiet")
    deadline = time.time() + 240
    while not (out / "checkpoint" / "state.json").is_file() and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    line = [x for x in err.splitlines() if x.startswith("interrupted: the last checkpoint is")]
    assert line, err
    assert str(out / "checkpoint") in line[0]
    command = line[0].split("resume with: ", 1)[1]
    assert command.startswith("aimmerging run ") and "--resume" in command
    assert command in (out / "run.log").read_text()
    words = shlex.split(command)                 # the command as printed resumes the run
    check_ok(aimmerging(*words[1:]))
    assert (out / "metrics.json").is_file()
