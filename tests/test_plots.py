"""`aimmerging plot`: figures from synthetic run folders (no training, a few seconds)."""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import struct
import zlib
from pathlib import Path

import pytest

from aimmerging.errors import ConfigError
from aimmerging.plots import add_parser, plot_intervals, plot_run
from aimmerging.traces import MERGE_FIELDS, SIGNAL_FIELDS, rows_to_csv

TASKS = ["dbpedia", "amazon", "yahoo", "agnews"]


def _write_run(d: Path, method: str, history: bool = True, merges: bool = True,
               drop: float = 4.0, seed: int = 0) -> Path:
    """A run folder like aimmerging.results writes, with made-up but plausible numbers."""
    rng = random.Random(seed)
    d.mkdir(parents=True)
    signals, trace = [], []
    for stage, task in enumerate(TASKS, start=1):
        interval, since, lam_step = 8, 0, 0
        for step in range(1, 61):
            row = {"task": task, "stage": stage, "step": step,
                   "train_loss": 3.0 * math.exp(-step / 25) + rng.random() * 0.2, "lr": 3e-4}
            if stage > 1:
                if history:
                    row["history_loss"] = 1.0 + 0.01 * step + rng.random() * 0.3
                    row["threshold"] = 1.9 if since > 5 else None
                if merges:
                    row["interval"] = interval
            since += 1
            if stage > 1 and merges and since >= interval:
                lam_step += 1
                trace.append({"task": task, "stage": stage, "step": step, "interval_run": since,
                              "next_interval": interval, "lambda": 5.0 / lam_step + rng.random(),
                              "threshold": 1.9, "activations": lam_step % 3,
                              "alpha_new": 0.6, "alpha_past": 0.4 if lam_step > 1 else 0.0,
                              "rehearsal_steps": max(1, since // 2), "rehearsal_skipped": 0,
                              "l1_change": 40.0 / lam_step})
                since = 0
                if lam_step > 3:
                    interval = min(32, interval * 2) if lam_step % 2 else max(2, interval // 2)
                    row["interval"] = interval
            signals.append(row)
    (d / "signals.csv").write_text(rows_to_csv(signals, SIGNAL_FIELDS))
    (d / "merge_trace.csv").write_text(rows_to_csv(trace, MERGE_FIELDS))
    k = len(TASKS)
    matrix = [[None if j < i else round(80.0 - (j - i) * drop + i, 1) for j in range(k)]
              for i in range(k)]
    (d / "accuracy_matrix.json").write_text(json.dumps({"tasks": TASKS, "matrix": matrix}))
    (d / "config.yaml").write_text(f"seed: 42\nmethod:\n  name: {method}\n")
    (d / "metrics.json").write_text(json.dumps({"method": method, "seed": 42, "tasks": TASKS,
                                                "op": 70.0, "bwt": -drop, "fwt": 0.5,
                                                "accuracy_matrix": matrix}))
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"aim": _write_run(root / "aimmerging", "aimmerging", drop=1.5, seed=1),
            "replay": _write_run(root / "replay", "replay", history=True, merges=False, drop=8.0,
                                 seed=2),
            "seq": _write_run(root / "seq_lora", "seq_lora", history=False, merges=False,
                              drop=15.0, seed=3)}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    # the IHDR chunk's CRC is right: the file was written whole
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"
    return width, height


def _check_png(path: Path) -> None:
    assert path.is_file(), path
    w, h = _png_size(path)
    assert 400 <= w <= 3000 and 300 <= h <= 3000, (path, w, h)
    assert path.stat().st_size > 10_000, path


def test_all_figures(runs, tmp_path: Path) -> None:
    run = tmp_path / "aim"
    shutil.copytree(runs["aim"], run)
    written = plot_run(run, baseline=runs["replay"], others=[runs["seq"]])
    names = sorted(p.name for p in written)
    assert names == sorted(["signals_task02_amazon.png", "signals_task03_yahoo.png",
                            "signals_task04_agnews.png", "history_loss_vs_baseline.png",
                            "first_task.png", "accuracy_matrix.png", "intervals.png"])
    for p in written:
        assert p.parent == run / "figures"
        _check_png(p)
    assert not [p for p in (run / "figures").iterdir() if p.name.startswith(".")]


def test_baseline_without_history_loss_is_skipped(runs, tmp_path: Path, capsys) -> None:
    run = tmp_path / "aim"
    shutil.copytree(runs["aim"], run)
    (run / "figures").mkdir(exist_ok=True)
    (run / "figures" / "history_loss_vs_baseline.png").write_bytes(b"an earlier plot's")
    written = plot_run(run, baseline=runs["seq"])
    assert "history_loss_vs_baseline.png" not in {p.name for p in written}
    err = capsys.readouterr().err
    assert "no history loss" in err and "removed the earlier history_loss_vs_baseline.png" in err
    assert not (run / "figures" / "history_loss_vs_baseline.png").exists()
    assert (run / "figures" / "first_task.png").is_file()


def test_run_without_merges(runs, tmp_path: Path) -> None:
    run = tmp_path / "seq"
    shutil.copytree(runs["seq"], run)
    names = {p.name for p in plot_run(run)}
    assert names == {"first_task.png", "accuracy_matrix.png", "intervals.png"}
    _check_png(run / "figures" / "intervals.png")


def test_plot_intervals_to_any_path(runs, tmp_path: Path) -> None:
    out = plot_intervals(runs["aim"], tmp_path / "sub" / "iv.png")
    assert out == tmp_path / "sub" / "iv.png"
    _check_png(out)


@pytest.mark.parametrize("missing", ["signals.csv", "merge_trace.csv"])
def test_missing_file_is_named(runs, tmp_path: Path, missing: str) -> None:
    run = tmp_path / "broken"
    shutil.copytree(runs["aim"], run)
    (run / missing).unlink()
    with pytest.raises(ConfigError, match=missing.replace(".", r"\.")):
        plot_run(run)
    if missing == "signals.csv":                        # the baseline's history loss
        with pytest.raises(ConfigError, match=f"--baseline: {run}: missing {missing}"):
            plot_run(runs["aim"], baseline=run)


def test_a_folder_of_traces_alone_gets_its_signal_figures(runs, tmp_path: Path) -> None:
    # an AIMMergingCallback's output_dir: signals.csv and merge_trace.csv, no scores
    run = tmp_path / "callback"
    run.mkdir()
    for name in ("signals.csv", "merge_trace.csv"):
        shutil.copy(runs["aim"] / name, run / name)
    names = {p.name for p in plot_run(run)}
    assert "intervals.png" in names and any(n.startswith("signals_task") for n in names)
    assert not {"first_task.png", "accuracy_matrix.png"} & names
    with pytest.raises(ConfigError, match="--runs: .*missing accuracy_matrix.json"):
        plot_run(runs["aim"], others=[run])


def test_cli(runs, tmp_path: Path, capsys) -> None:
    run = tmp_path / "aim"
    shutil.copytree(runs["aim"], run)
    parser = argparse.ArgumentParser(prog="aimmerging")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["plot", str(run), "--runs", f"{runs['replay']},{runs['seq']}"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out.split()
    assert str(run / "figures" / "intervals.png") in printed
    assert all(Path(p).is_file() for p in printed)
    bad = parser.parse_args(["plot", str(tmp_path / "nope")])
    with pytest.raises(ConfigError, match="nope"):
        bad.func(bad)


def test_cli_exit_code_through_main(tmp_path: Path, capsys) -> None:
    from aimmerging.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    assert "empty: missing signals.csv (not a run folder" in capsys.readouterr().err


def test_no_finished_stage_draws_no_score_figures(runs, tmp_path: Path, capsys) -> None:
    run = tmp_path / "aim"
    shutil.copytree(runs["aim"], run)
    (run / "accuracy_matrix.json").write_text(json.dumps(
        {"tasks": TASKS, "matrix": [[None] * len(TASKS) for _ in TASKS]}))
    (run / "figures").mkdir(exist_ok=True)
    (run / "figures" / "first_task.png").write_bytes(b"an earlier plot's")
    names = {p.name for p in plot_run(run)}
    assert "first_task.png" not in names and "accuracy_matrix.png" not in names
    assert "no stage of" in capsys.readouterr().err
    assert not (run / "figures" / "first_task.png").exists()


def test_a_run_of_other_tasks_is_named_and_drawn_whole(runs, tmp_path: Path, capsys) -> None:
    other = tmp_path / "longer"
    shutil.copytree(runs["seq"], other)
    tasks = TASKS + ["sst2"]
    matrix = [[None if j < i else 50.0 for j in range(5)] for i in range(5)]
    (other / "accuracy_matrix.json").write_text(json.dumps({"tasks": tasks, "matrix": matrix}))
    run = tmp_path / "aim"
    shutil.copytree(runs["aim"], run)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["seq"], unfinished)
    (unfinished / "accuracy_matrix.json").write_text(json.dumps(
        {"tasks": TASKS, "matrix": [[None] * 4 for _ in TASKS]}))
    plot_run(run, others=[other, unfinished])
    err = capsys.readouterr().err
    assert "its line follows its own stages" in err
    assert f"{unfinished}: no stage has finished; no line in first_task.png" in err
    _check_png(run / "figures" / "first_task.png")


@pytest.mark.parametrize("name", ["accuracy_matrix.json", "metrics.json"])
def test_a_json_file_that_is_not_an_object_is_named(runs, tmp_path: Path, name: str) -> None:
    run = tmp_path / "damaged"
    shutil.copytree(runs["aim"], run)
    (run / name).write_text("[1, 2]")
    with pytest.raises(ConfigError, match=re.escape(name) + ": expected a JSON object"):
        plot_run(run)
