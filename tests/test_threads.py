"""``--threads N`` of ``aimmerging run``, ``compare`` and ``demo``."""

import argparse

import pytest
import torch

from aimmerging.cli import build_parser
from aimmerging.threads import apply_threads


def test_threads_sets_torch_threads_and_is_left_alone_without_it():
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    try:
        apply_threads(argparse.Namespace(threads=None))
        assert torch.get_num_threads() == before
        apply_threads(argparse.Namespace(threads=wanted))
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", [["run", "c.yaml"], ["compare", "c.yaml", "--methods", "replay",
                                                         "--output", "o"], ["demo"]])
@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_threads_must_be_a_positive_whole_number(command, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*command, "--threads", bad])
    assert exc.value.code == 2
    assert "--threads: must be a whole number >= 1" in capsys.readouterr().err
    assert build_parser().parse_args([*command, "--threads", "1"]).threads == 1


def test_threads_beyond_the_cpus_are_refused(monkeypatch, capsys):
    import aimmerging.threads as threads

    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    assert build_parser().parse_args(["run", "c.yaml", "--threads", "4"]).threads == 4
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "c.yaml", "--threads", "99999"])
    assert "--threads: at most 4 (the CPUs this process may use), got 99999" in capsys.readouterr().err


def test_demo_applies_threads_before_it_runs(monkeypatch):
    import aimmerging.demo as demo
    from aimmerging.cli import main

    seen = {}

    def fake_demo(*args, **kwargs):
        seen["threads"] = torch.get_num_threads()
        return 0

    monkeypatch.setattr(demo, "run_demo", fake_demo)
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    try:
        assert main(["demo", "--threads", str(wanted), "--output", "unused"]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == wanted


def test_busy_cores_note_warns_only_when_the_load_leaves_too_few_cores(monkeypatch):
    from aimmerging import threads

    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    assert threads.busy_cores_note(2, load=1.0) is None          # 3 free for 2 threads
    note = threads.busy_cores_note(4, load=3.0)                    # 1 free for 4 threads
    assert note and "1.0 of 4 cores free for 4 torch threads" in note and "--threads" in note
    assert threads.busy_cores_note(1, load=3.5) is None            # 0.5 free: within half a core
    assert "free for 1 torch thread, so" in threads.busy_cores_note(1, load=3.9)   # 0.1 free
