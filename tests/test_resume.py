"""Resume: a run killed with SIGKILL in the middle of a task and resumed (``--resume``) ends with
the same accuracy matrix, merge trace, signals, predictions and adapters as the same run
uninterrupted; the checkpoint itself is atomic and survives NaN values."""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import pytest
import torch

from runhelp import (SMALL, SMOKE, aimmerging, assert_same_results, check_ok, needs_data, popen,
                     sets)

from aimmerging import checkpoint as ckpt

CKPT = SMALL + ["train.checkpoint_every=2"]     # 8 steps per task: checkpoints at steps 2, 4, 6


def _position(run_dir: Path):
    try:
        return json.loads((run_dir / "checkpoint" / "state.json").read_text())["position"]
    except (OSError, ValueError, KeyError):
        return None


def _run_and_kill(run_dir: Path, stage: int, resume: bool, timeout: float = 240) -> dict:
    """Start ``aimmerging run``; SIGKILL it once its checkpoint is at ``stage`` (0-based), step >= 2."""
    args = ["run", SMOKE, *sets(CKPT), "--output", run_dir, "--quiet"]
    proc = popen(*args, *(["--resume"] if resume else []))
    t0 = time.monotonic()
    try:
        while True:
            pos = _position(run_dir)
            if pos is not None and pos["stage"] == stage and pos["step"] >= 2:
                break
            assert proc.poll() is None, f"the run ended before it could be killed: " \
                                        f"{proc.communicate()[1][-2000:]}"
            assert time.monotonic() - t0 < timeout, "no mid-task checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL          # it was killed, it did not finish
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    pos = _position(run_dir)
    assert pos["stage"] == stage and 2 <= pos["step"] < 8, pos       # really mid-task
    assert not (run_dir / "metrics.json").exists()
    return pos


@needs_data
@pytest.mark.timeout(900)
def test_sigkill_mid_task_then_resume_gives_the_same_run(tmp_path):
    ref, run = tmp_path / "reference", tmp_path / "killed"
    check_ok(aimmerging("run", SMOKE, *sets(CKPT), "--output", ref, "--quiet"))
    # killed in task 2, resumed, killed again in task 3, resumed to the end
    first = _run_and_kill(run, stage=1, resume=False)
    second = _run_and_kill(run, stage=2, resume=True)
    proc = aimmerging("run", SMOKE, *sets(CKPT), "--output", run, "--quiet", "--resume")
    check_ok(proc)
    log = (run / "run.log").read_text()
    assert f"resumed from {run}/checkpoint at stage 2, step {first['step']}" in log
    assert f"resumed from {run}/checkpoint at stage 3, step {second['step']}" in log
    assert_same_results(ref, run)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ref, run))
    # the loops' clock survives the kills: it covers every timed part, interrupted stages too
    t = mb["timing_seconds"]
    assert t["train_seconds"] >= t["train_step_seconds"] + t["monitor_seconds"] + t["rehearsal_seconds"]
    for m in (ma, mb):
        m.pop("timing_seconds")
    assert ma == mb
    assert not [p for p in run.rglob(".*")]       # no temporary leftovers


@needs_data
@pytest.mark.timeout(600)
@pytest.mark.parametrize("method", ["aimmerging_ifm", "ewc", "moe_lora", "single_merge",
                                    "single_merge:importance"])
def test_crash_then_resume_other_methods(method, tmp_path, monkeypatch):
    """In-process: a crash after step 3 of task 2 (checkpoint at step 2), then resume."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # as the subprocess runs (and faster on a busy machine)
    try:
        _crash_and_resume(method, tmp_path, monkeypatch)
    finally:
        torch.set_num_threads(threads)


def _crash_and_resume(method, tmp_path, monkeypatch):
    from aimmerging.config import load_config
    from aimmerging.loop import ContinualTrainer
    from aimmerging.runner import run

    name, _, combination = method.partition(":")      # single_merge:importance, its variant
    over = CKPT + [f"method.name={name}", "data.tasks=[dbpedia,amazon]", "data.n_train=12"]
    over += [f"method.single_merge_combination={combination}"] if combination else []
    cfg = load_config(SMOKE, over)
    ref, out = tmp_path / "ref", tmp_path / "crashed"
    run(cfg, ref, progress=False)

    class Crash(Exception):
        pass

    original = ContinualTrainer._optimizer_step

    def crashing(self, group, examples, sched):
        loss = original(self, group, examples, sched)
        if self.signal.get("stage") == 2 and sched.last_epoch == 3:
            raise Crash
        return loss

    monkeypatch.setattr(ContinualTrainer, "_optimizer_step", crashing)
    with pytest.raises(Crash):
        run(cfg, out, progress=False)
    assert _position(out) == {"stage": 1, "step": 2}
    monkeypatch.setattr(ContinualTrainer, "_optimizer_step", original)
    run(cfg, out, resume=True, progress=False)
    assert_same_results(ref, out)
    assert "resumed from" in (out / "run.log").read_text()
    written = (out / "metrics.json").stat()
    again = run(cfg, out, resume=True, progress=False)     # a finished run: nothing to train
    assert "the run had finished, nothing is left to train" in (out / "run.log").read_text()
    now = (out / "metrics.json").stat()                    # left as it was written
    assert (now.st_ino, now.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert again == json.loads((out / "metrics.json").read_text())


def test_resume_without_a_run_says_it_starts_anew(tmp_path):
    from aimmerging.config import build_config
    from aimmerging.runner import run

    cfg = build_config({
        "data": {"dir": None, "tasks": ["demo_sentiment", "demo_topic"], "n_train": 4, "n_test": 2,
                 "max_input_tokens": 32, "max_target_tokens": 4},
        "model": {"name": "tiny-llama"}, "method": {"name": "seq_lora"},
        "train": {"epochs": 1, "batch_size": 4}, "eval": {"max_new_tokens": 2}})
    run(cfg, tmp_path / "typo", resume=True, progress=False)
    assert "--resume: nothing to resume in" in (tmp_path / "typo" / "run.log").read_text()


def test_checkpoint_keeps_nan_and_is_atomic(tmp_path):
    state = {"position": {"stage": 1, "step": 2},
             "traces": {"signals": [{"history_loss": math.nan, "x": math.inf, "y": 1.5}]}}
    adapter = {"w": torch.arange(6.0).view(2, 3)}
    opt = {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    ckpt.save_checkpoint(tmp_path, state, adapter, {"optimizer": opt}, {})
    folder = ckpt.find_checkpoint(tmp_path)
    assert folder == tmp_path / "checkpoint"
    text = (folder / "state.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = ckpt.load_checkpoint(folder, ("optimizer",))
    row = data["state"]["traces"]["signals"][0]
    assert math.isnan(row["history_loss"]) and row["x"] == math.inf and row["y"] == 1.5
    assert torch.equal(data["adapter"]["w"], adapter["w"])
    assert data["optimizers"]["optimizer"]["state"][0]["step"].item() == 3.0
    # a second save replaces the first and leaves no temporary folder
    state["position"]["step"] = 4
    ckpt.save_checkpoint(tmp_path, state, adapter, {"optimizer": opt}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert ckpt.read_state(tmp_path / "checkpoint")["position"]["step"] == 4


def test_interrupted_save_leaves_a_complete_checkpoint(tmp_path):
    """A kill between the two renames leaves only .checkpoint.old (complete), plus a half
    written temporary folder: the resume takes .checkpoint.old and removes the rest."""
    state = {"position": {"stage": 0, "step": 2}}
    ckpt.save_checkpoint(tmp_path, state, {"w": torch.ones(2)}, {}, {})
    (tmp_path / "checkpoint").rename(tmp_path / ".checkpoint.old")
    half = tmp_path / ".checkpoint.abc123"
    half.mkdir()
    (half / "adapter.safetensors").write_bytes(b"partial")
    (tmp_path / ".signals.csv.x1.tmp").write_text("half")
    assert ckpt.find_checkpoint(tmp_path) == tmp_path / ".checkpoint.old"
    ckpt.clean_partial(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert ckpt.read_state(tmp_path / "checkpoint")["position"]["step"] == 2
    # an incomplete folder is never taken for a checkpoint
    (tmp_path / "checkpoint" / "rng.safetensors").unlink()
    assert ckpt.find_checkpoint(tmp_path) is None


def test_unreadable_checkpoint_is_a_training_error(tmp_path):
    from aimmerging.errors import TrainingError

    ckpt.save_checkpoint(tmp_path, {"position": {"stage": 0, "step": 2}}, {"w": torch.ones(2)},
                         {"optimizer": {"state": {}, "param_groups": []}}, {})
    (tmp_path / "checkpoint" / "adapter.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(TrainingError, match="unreadable checkpoint"):
        ckpt.load_checkpoint(tmp_path / "checkpoint", ("optimizer",))
