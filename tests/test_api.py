"""The public Python API: ``import aimmerging`` exports it lazily (no torch at import), and
``aimmerging.run`` / ``aimmerging.compare`` raise typed errors, never SystemExit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import aimmerging
from runhelp import ROOT, env

PUBLIC = ["run", "compare", "load_config", "RunConfig", "MergeController", "ControllerConfig",
          "MergePlan", "fuse_", "snapshot", "l1_change", "ReplayMemory", "AIMMergingCallback",
          "MergingEngine", "AimmergingError", "ConfigError", "DataError", "TrainingError"]

TINY = {"model": {"name": "tiny-llama"},
        "data": {"tasks": ["demo_sentiment", "demo_topic"], "n_train": 8, "n_test": 4,
                 "max_input_tokens": 64, "max_target_tokens": 4},
        "method": {"name": "aimmerging", "s_init": 2, "memory_size": 4},
        "train": {"batch_size": 4, "epochs": 2}, "eval": {"max_new_tokens": 2}}


def test_every_public_name_is_exported():
    assert sorted(aimmerging.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(aimmerging, name) is not None, name
    assert set(PUBLIC) <= set(dir(aimmerging))
    assert issubclass(aimmerging.ConfigError, aimmerging.AimmergingError)
    from aimmerging.controller import MergeController

    assert aimmerging.MergeController is MergeController
    with pytest.raises(AttributeError, match="no_such_name"):
        aimmerging.no_such_name


def test_import_is_light_and_compare_is_callable_in_any_order():
    code = ("import sys, aimmerging; assert 'torch' not in sys.modules, 'torch'; "
            "import aimmerging.cli; aimmerging.cli.build_parser(); "
            "assert 'torch' not in sys.modules, 'torch at the CLI start'; "
            "import aimmerging.compare as module; "
            "assert callable(aimmerging.compare) and aimmerging.compare is module; "
            "assert module.compare_runs; print(sorted(aimmerging.__all__)[0])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env(), cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "AIMMergingCallback"


@pytest.mark.parametrize("config, overrides, message", [
    ({"train": {"epochs": 0}}, None, "train.epochs: Input should be greater than or equal to 1"),
    ("no/such.yaml", None, "no/such.yaml: config file not found"),
    (TINY, {"method.name": "nope"}, "method.name: unknown method 'nope'"),
    (TINY, ["train.batch_size=x"], "--set train.batch_size=x: train.batch_size: expected an integer"),
    (TINY, {"data.dir": "/no/such/folder"}, "data.dir: /no/such/folder is not a folder"),
    (42, None, "config: expected a YAML path, a dict or a RunConfig, not int"),
])
def test_bad_configs_raise_config_error(tmp_path, config, overrides, message):
    with pytest.raises(aimmerging.ConfigError) as info:
        aimmerging.run(config, overrides, output=tmp_path / "run", progress=False)
    assert message in str(info.value)
    assert not (tmp_path / "run").exists()          # nothing written before the checks


def test_run_returns_the_metrics_of_the_run_folder(tmp_path):
    cfg = aimmerging.load_config(None, ["model.name=tiny-llama"])
    assert isinstance(cfg, aimmerging.RunConfig)
    metrics = aimmerging.run(TINY, {"seed": 3}, output=tmp_path / "run", progress=False)
    assert metrics == json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["seed"] == 3 and len(metrics["accuracy_matrix"]) == 2
    # a RunConfig, with the same output: refused unless overwrite or resume (ConfigError)
    from aimmerging.config import build_config

    with pytest.raises(aimmerging.ConfigError, match="already holds"):
        aimmerging.run(build_config(TINY), output=tmp_path / "run", progress=False)
    again = aimmerging.run(build_config(TINY), {"seed": 3}, output=tmp_path / "run",
                           resume=True, progress=False)
    assert again["accuracy_matrix"] == metrics["accuracy_matrix"]


def test_compare_passes_its_arguments_through(monkeypatch, tmp_path):
    import aimmerging.compare as module

    seen = {}

    def fake(config_path, methods, overrides=(), output=None, **kwargs):
        seen.update(config=config_path, methods=methods, overrides=overrides, output=output, **kwargs)
        return ["rows"]

    monkeypatch.setattr(module, "compare_runs", fake)
    rows = aimmerging.compare("c.yaml", ["seq_lora", "aimmerging"], output=tmp_path,
                              overrides={"train.epochs": 1, "data.tasks": ["a", "b"]}, fwt=False)
    assert rows == ["rows"]
    assert seen == {"config": "c.yaml", "methods": ["seq_lora", "aimmerging"],
                    "overrides": ["train.epochs=1", 'data.tasks=["a", "b"]'], "output": tmp_path,
                    "fwt": False}
    import aimmerging.multiseed as multiseed

    seen.clear()

    def fake_seeds(config_path, methods, seeds, overrides=(), output=None, **kwargs):
        seen.update(config=config_path, seeds=seeds, overrides=overrides, **kwargs)
        return {"summary": 1}

    monkeypatch.setattr(multiseed, "compare_seeds", fake_seeds)
    assert aimmerging.compare("c.yaml", "replay", output=tmp_path, seeds=[1, 2],
                              reference="replay") == {"summary": 1}
    assert seen == {"config": "c.yaml", "seeds": [1, 2], "overrides": [], "reference": "replay"}


def test_compare_errors_are_typed(tmp_path):
    with pytest.raises(aimmerging.ConfigError, match="--output: give the folder"):
        aimmerging.compare(ROOT / "configs" / "demo.yaml", "seq_lora")
    with pytest.raises(aimmerging.ConfigError, match="unknown method"):
        aimmerging.compare(ROOT / "configs" / "demo.yaml", "nope", output=tmp_path)


def test_compare_with_seeds_goes_to_the_multi_seed_comparison(tmp_path):
    import aimmerging

    with pytest.raises(aimmerging.ConfigError, match="--seeds"):     # checked before any run
        aimmerging.compare("configs/smoke.yaml", ["replay"], seeds="42,x", output=tmp_path)


def test_data_finds_the_benchmark_folder_as_the_command_lines_data_does(tmp_path, monkeypatch):
    from aimmerging.api import resolve_config

    (tmp_path / "cl" / "data_longsequence").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg, stem = resolve_config(ROOT / "configs" / "quick.yaml", data="~/cl")
    assert (cfg.data.dir, stem) == (str(tmp_path / "cl" / "data_longsequence"), "quick")
    with pytest.raises(aimmerging.ConfigError, match="--data and --set data.dir"):
        resolve_config(ROOT / "configs" / "quick.yaml", {"data.dir": "x"}, data="~/cl")


def test_threads_sets_torchs_threads_for_the_run_and_restores_them(tmp_path):
    import torch

    before = torch.get_num_threads()
    metrics = aimmerging.run(TINY, output=tmp_path / "run", progress=False, threads=1)
    assert metrics["machine"]["torch_threads"] == 1
    assert torch.get_num_threads() == before
    for bad in (0, -2, "1", True):
        with pytest.raises(aimmerging.ConfigError, match="threads must be a whole number >= 1"):
            aimmerging.run(TINY, output=tmp_path / "bad", progress=False, threads=bad)
    assert not (tmp_path / "bad").exists()


def test_without_progress_the_logs_warnings_still_reach_stderr(tmp_path, monkeypatch, capsys):
    from aimmerging import threads

    monkeypatch.setattr(threads, "busy_cores_note", lambda n: f"the machine is busy ({n} thread)")
    aimmerging.run(TINY, output=tmp_path / "run", progress=False, threads=1)
    err = capsys.readouterr().err
    assert "the machine is busy (1 thread)\n" in err.splitlines(keepends=True)   # a bare line
    assert " INFO " not in err                                   # the rest is in run.log only
    log = (tmp_path / "run" / "run.log").read_text()
    assert "WARNING the machine is busy (1 thread)" in log and " INFO done: OP" in log
