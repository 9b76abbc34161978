"""``aimmerging bench``: the CLI glue and one quick benchmark end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datapaths import DATA_ROOT

from aimmerging import bench
from aimmerging.cli import main

REPO = Path(__file__).resolve().parents[1]
DATA = DATA_ROOT / "data_longsequence"


def test_finds_benchmarks_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AIMMERGING_BENCHMARKS", raising=False)
    folder = bench.find_benchmarks_dir()
    assert folder == (REPO / "benchmarks").resolve()
    for name in bench.BENCHMARKS:
        assert (folder / f"{name}.py").is_file()


def test_every_benchmark_module_has_run():
    for name in bench.BENCHMARKS:
        assert callable(bench.load_benchmark(name).run)


def test_unknown_benchmark_is_a_one_line_error(capsys, tmp_path):
    assert main(["bench", "--quick", "--only", "nope", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bench --only: unknown benchmark 'nope'")
    for empty in ("", " , "):
        assert main(["bench", "--quick", "--only", empty, "--output", str(tmp_path)]) == 2
        assert capsys.readouterr().err.startswith("error: bench --only: give at least one benchmark")
    assert not any(tmp_path.iterdir())


def test_ratios_are_collected_from_nested_keys():
    figures = {"a_ratio": 1.5, "x": {"b_ratio": 2, "c": 3}, "targets": {"a_ratio": {"value": 1}},
               "summary": "s"}
    assert bench._ratios(figures) == {"a_ratio": 1.5, "x.b_ratio": 2}


@pytest.mark.skipif(not DATA.is_dir(), reason="benchmark data not present")
@pytest.mark.timeout(120)
def test_quick_evaluation_benchmark_writes_ratios(tmp_path):
    env = dict(os.environ, AIMMERGING_BENCH_THREADS="1", AIMMERGING_BENCH_DATA=str(DATA_ROOT))
    cmd = [sys.executable, "-m", "aimmerging", "bench", "--quick", "--only", "evaluation",
           "--output", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "evaluation: batched generation" in proc.stdout
    figures = json.loads((tmp_path / "evaluation.json").read_text())
    ratios = {k: v for k, v in figures.items() if "ratio" in k}
    assert "speedup_ratio" in ratios and ratios["speedup_ratio"] > 0
    assert all(isinstance(v, (int, float)) for v in ratios.values())
    assert figures["summary"] and figures["machine"]["cores"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mode"] == "quick"
    assert "speedup_ratio" in summary["benchmarks"]["evaluation"]["ratios"]


def test_summary_keeps_the_entries_of_benchmarks_not_rerun(tmp_path):
    path = tmp_path / "summary.json"
    assert bench._previous_entries(path, "full") == {}                     # no file yet
    path.write_text(json.dumps({"mode": "full", "benchmarks": {"memory": {"summary": "m"}}}))
    path.write_text(json.dumps({"mode": "full", "benchmarks": {
        "memory": {"summary": "m"}, "scaling": {"summary": "s", "measured_on": "2026-11-30"}}}))
    assert bench._previous_entries(path, "full") == {                       # undated: "unknown"
        "memory": {"measured_on": "unknown", "summary": "m"},
        "scaling": {"summary": "s", "measured_on": "2026-11-30"}}
    assert bench._previous_entries(path, "quick") == {}                    # another mode
    for bad in ("[1, 2]", "{not json", json.dumps({"mode": "full", "benchmarks": [1]})):
        path.write_text(bad)
        assert bench._previous_entries(path, "full") == {}


def test_sampling_activations_run_the_controller_on_sampled_losses():
    from aimmerging.controller import ControllerConfig

    simulate = bench.load_benchmark("_history_probes").sampling_activations
    config = ControllerConfig()                    # S = 8: calibration over 5 steps, 2S = 16
    flat = simulate([(1.0, 1)] * 10, (1, 4), config, trials=300)
    assert all(r == {"per_step": 0.0, "activated_merges": 0.0, "early_merges": 0.0}
               for r in flat.values())
    # one example of ten has loss 100, the others 1 (one answer token each): a batch of one
    # crosses 2x the calibration mean whenever it draws it, unless 3+ of 5 calibration draws did
    spiky = [(100.0, 1)] + [(1.0, 1)] * 9
    rates = simulate(spiky, (1, 10), config, trials=20000)
    calm = 1 - (10 * 0.1 ** 3 * 0.9 ** 2 + 5 * 0.1 ** 4 * 0.9 + 0.1 ** 5)   # <= 2 in calibration
    assert rates["1"]["per_step"] == pytest.approx(0.0987, abs=0.006)
    # an activation in monitored steps 6-16 makes the merge carry alpha_past > 0
    assert rates["1"]["activated_merges"] == pytest.approx(calm * (1 - 0.9 ** 11), abs=0.015)
    assert rates["1"]["early_merges"] == 0.0       # F_max = 3 activations need 3 steps before S
    assert rates["10"]["activated_merges"] == 0.0  # the whole memory: the mean never moves


def _fake_run(log, steps, fail_at=None):
    """A stand-in for run_trainer: a trainer whose steps log (name, step) in the order they ran."""
    import types

    def run(cfg, run_dir, tasks, instrument):
        trainer = types.SimpleNamespace(timing={"train_step_seconds": 0.0, "train_seconds": 0.0})
        trainer._optimizer_step = lambda step: log.append((cfg, step))
        instrument(trainer)
        for s in range(steps[cfg]):
            if (cfg, s) == fail_at:
                raise RuntimeError(f"{cfg} failed")
            trainer._optimizer_step(s)
        return {"run_seconds": 0.0, "trainer": trainer}

    return run


def test_runs_in_turns_alternate_step_by_step_until_one_ends():
    turns = bench.load_benchmark("turns")
    log = []
    jobs = [{"cfg": "a", "run_dir": None, "tasks": None}, {"cfg": "b", "run_dir": None, "tasks": None}]
    out = turns.run_in_turns(jobs, _fake_run(log, {"a": 2, "b": 4}))
    assert log == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("b", 2), ("b", 3)]
    assert [r["trainer"].timing["train_step_seconds"] <= 0 for r in out] == [True, True]
    assert all("waited_seconds" in r for r in out)


def test_a_failing_run_in_turns_lets_the_other_finish_then_raises():
    turns = bench.load_benchmark("turns")
    log = []
    jobs = [{"cfg": "a", "run_dir": None, "tasks": None}, {"cfg": "b", "run_dir": None, "tasks": None}]
    with pytest.raises(RuntimeError, match="a failed"):
        turns.run_in_turns(jobs, _fake_run(log, {"a": 3, "b": 3}, fail_at=("a", 1)))
    assert log == [("a", 0), ("b", 0), ("b", 1), ("b", 2)]


def test_fractions_of_peak_are_collected_from_nested_keys():
    figures = {"flops": {"main": {"flop_per_s": 5.0, "fraction_of_float32_peak": 0.5},
                         "peak": {"float32_flop_per_s": 10.0}},
               "fraction_of_float32_peak": {"no": 0.4}, "x_ratio": 2}
    assert bench._fractions(figures) == {"flops.main.fraction_of_float32_peak": 0.5,
                                         "fraction_of_float32_peak.no": 0.4}


def test_summary_names_the_machine_from_a_benchmark_s_file(tmp_path):
    assert bench._written_machine(tmp_path / "none.json") is None
    (tmp_path / "x.json").write_text(json.dumps({"machine": {"cpu": "c", "cpu_flags": {"avx2": True}}}))
    assert bench._written_machine(tmp_path / "x.json")["cpu_flags"] == {"avx2": True}
    (tmp_path / "y.json").write_text("[1]")
    assert bench._written_machine(tmp_path / "y.json") is None
