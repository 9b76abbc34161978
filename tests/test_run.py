"""End to end: configs/smoke.yaml (made smaller) writes a complete run folder; the same config
and seed give identical results; ``aimmerging export`` gives a loadable model."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from runhelp import (SMALL, SMOKE, adapter_tensors, aimmerging, assert_same_results, check_ok,
                     csv_rows, needs_data, sets)

pytestmark = [needs_data, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same small smoke run twice, each in its own process (and hash seed)."""
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for i, hash_seed in enumerate(("1", "2")):
        out = root / f"run{i}"
        proc = aimmerging("run", SMOKE, *sets(SMALL), "--output", out, "--quiet",
                          "--threads", "1", PYTHONHASHSEED=hash_seed)
        check_ok(proc)
        metrics = json.loads((out / "metrics.json").read_text())
        assert proc.stdout.splitlines() == [                # --quiet: the result and the folder
            f"OP {metrics['op']:.2f}   BWT {metrics['bwt']:+.2f}   FWT -   "
            f"merges {metrics['merges']}", f"run folder: {out}"]
        dirs.append(out)
    return dirs


def test_run_folder_is_complete(two_runs):
    run = two_runs[0]
    for name in ("config.yaml", "metrics.json", "accuracy_matrix.csv", "accuracy_matrix.json",
                 "merge_trace.csv", "signals.csv", "run.log", "checkpoint/state.json"):
        assert (run / name).is_file(), name
    tasks = ["dbpedia", "amazon", "agnews"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["tasks"] == tasks and metrics["method"] == "aimmerging"
    assert len(metrics["accuracy_matrix"]) == 3
    # lower triangle filled (score after each stage for the tasks seen so far)
    m = json.loads((run / "accuracy_matrix.json").read_text())
    assert m is not None
    stages = [f"stage{k + 1:02d}_{t}" for k, t in enumerate(tasks)]
    assert sorted(p.name for p in (run / "adapters").iterdir()) == stages
    preds = sorted(p.name for p in (run / "predictions").iterdir())
    assert preds == sorted(f"{s}__{t}.jsonl" for k, s in enumerate(stages) for t in tasks[:k + 1])
    lines = (run / "predictions" / preds[0]).read_text().splitlines()
    assert len(lines) == 6 and set(json.loads(lines[0])) == {"id", "input", "output", "prediction"}
    signals = csv_rows(run / "signals.csv")
    assert [r["task"] for r in signals].count("dbpedia") == 8      # 16 examples / 4 x 2 epochs
    assert all(r["history_loss"] for r in signals if r["task"] != "dbpedia")
    merges = csv_rows(run / "merge_trace.csv")
    assert merges and any(float(r["alpha_past"]) > 0 for r in merges)
    assert {r["task"] for r in merges} == {"amazon", "agnews"}
    log = (run / "run.log").read_text()
    assert "after agnews" in log        # the log's result line reads as --quiet prints it
    assert f"done: OP {metrics['op']:.2f}, BWT {metrics['bwt']:+.2f}, FWT -" in log
    # no temporary leftovers
    assert not [p for p in run.rglob(".*")], list(run.rglob(".*"))


def test_signals_log_the_learning_rate_each_step_used(two_runs):
    import yaml

    lr = yaml.safe_load((two_runs[0] / "config.yaml").read_text())["train"]["lr"]
    rows = csv_rows(two_runs[0] / "signals.csv")
    for task in {r["task"] for r in rows}:
        rates = [float(r["lr"]) for r in rows if r["task"] == task]
        assert 0 < rates[-1] < rates[0] <= lr, (task, rates)     # linear decay, never 0 in use


def test_threads_option_sets_and_logs_torch_threads(two_runs):
    log = (two_runs[0] / "run.log").read_text()
    assert "torch CPU threads: 1 " in log                     # the machine has more cores
    assert "backbone weights: float32 (model.dtype: float32)" in log


def test_adapters_load_with_peft(two_runs):
    from peft import PeftModel

    from aimmerging.models import load_backbone

    run = two_runs[0]
    tensors = adapter_tensors(run)
    first, last = tensors["stage01_dbpedia"], tensors["stage03_agnews"]
    assert any(not torch.equal(first[k], last[k]) for k in first)   # training changed the adapter
    backbone = load_backbone("tiny-llama")
    ids = backbone.tokenizer("Answer: yes", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base_logits = backbone.model(input_ids=ids).logits
    model = PeftModel.from_pretrained(backbone.model, str(run / "adapters" / "stage03_agnews"))
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(last)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == base_logits.shape and not torch.allclose(logits, base_logits)


def test_same_seed_gives_identical_results(two_runs):
    a, b = two_runs
    assert_same_results(a, b)
    for d in sorted((a / "adapters").iterdir()):      # byte-identical adapter files
        assert (d / "adapter_model.safetensors").read_bytes() == \
            (b / "adapters" / d.name / "adapter_model.safetensors").read_bytes()
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    ma.pop("timing_seconds"), mb.pop("timing_seconds")
    assert ma == mb


def test_other_seed_differs(two_runs, tmp_path):
    """The comparison above can fail: another seed gives other traces."""
    out = tmp_path / "seed7"
    check_ok(aimmerging("run", SMOKE, *sets(SMALL + ["seed=7", "data.tasks=[dbpedia]"]),
                        "--output", out, "--quiet"))
    ref = csv_rows(two_runs[0] / "signals.csv")[:8]
    other = csv_rows(out / "signals.csv")
    assert [r["step"] for r in other] == [r["step"] for r in ref]
    assert [r["train_loss"] for r in other] != [r["train_loss"] for r in ref]


def test_export_loads_with_transformers(two_runs, tmp_path):
    from transformers import AutoModelForCausalLM

    from aimmerging.models import load_backbone

    run, dest = two_runs[0], tmp_path / "exported"
    proc = aimmerging("export", run, "--stage", "2", "--output", dest)
    check_ok(proc)
    assert "exported stage02_amazon" in proc.stdout
    mask = os.umask(0)
    os.umask(mask)
    assert dest.stat().st_mode & 0o777 == 0o777 & ~mask       # as mkdir makes a folder
    for path in dest.iterdir():                                 # as a plain write makes a file
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path
    check_ok(aimmerging("export", run, "--stage", "2", "--output", dest))   # an export: replaced
    (tmp_path / "exported.tmp").mkdir()        # a user's folder beside it: untouched
    shutil.copytree(dest, tmp_path / "annotated")
    (tmp_path / "annotated" / "notes.txt").write_text("mine")
    for folder in (run, tmp_path, tmp_path / "annotated"):   # a run, other things, an export + notes
        before = sorted(p.name for p in folder.iterdir())
        proc = aimmerging("export", run, "--output", folder)
        assert proc.returncode == 2 and "--output" in proc.stderr, proc.stderr
        assert sorted(p.name for p in folder.iterdir()) == before
    proc = aimmerging("export", run, "--output", ".")        # the current folder (the repository)
    assert proc.returncode == 2 and "current folder" in proc.stderr, proc.stderr
    assert (tmp_path / "exported.tmp").is_dir()
    model = AutoModelForCausalLM.from_pretrained(str(dest))
    assert not any("lora" in n for n, _ in model.named_parameters())
    base = load_backbone("tiny-llama").model
    q = "model.layers.0.self_attn.q_proj.weight"
    merged_sd, base_sd = model.state_dict(), base.state_dict()
    assert merged_sd[q].shape == base_sd[q].shape and not torch.equal(merged_sd[q], base_sd[q])
    # the merged model computes what backbone + stage-2 adapter compute
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(load_backbone("tiny-llama").model,
                                           str(run / "adapters" / "stage02_amazon"))
    ids = torch.tensor([[2, 40, 41, 42, 43]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, peft_model(input_ids=ids).logits,
                              atol=1e-4)


def _run_on_one_thread(cfg, out):
    """``runner.run`` on one torch thread (the threads restored after)."""
    from aimmerging.runner import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(cfg, out, progress=False)
    finally:
        torch.set_num_threads(threads)


def test_history_loss_logged_for_a_baseline(tmp_path):
    """``method.log_history_loss`` measures the history loss for methods that do not use it."""
    from aimmerging.config import load_config

    cfg = load_config(SMOKE, SMALL + ["method.name=replay", "method.log_history_loss=true",
                                      "data.tasks=[dbpedia,amazon]", "data.n_train=8",
                                      "train.epochs=1"])
    _run_on_one_thread(cfg, tmp_path / "run")
    rows = csv_rows(tmp_path / "run" / "signals.csv")
    assert [r["history_loss"] for r in rows if r["task"] == "dbpedia"] == ["", ""]   # no memory yet
    later = [r["history_loss"] for r in rows if r["task"] == "amazon"]
    assert len(later) == 3 and all(float(v) > 0 for v in later)


def test_step_signals_reach_tensorboard(tmp_path):
    """``train.report_to=tensorboard`` sends every step's signals through Accelerate's tracker."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    check_ok(aimmerging("run", SMOKE, *sets(SMALL + ["data.tasks=[dbpedia,amazon]", "data.n_train=8",
                                                     "train.epochs=1", "train.report_to=tensorboard"]),
                        "--output", out, "--quiet"))
    events = sorted(out.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {out}"
    scalars = {}
    for path in events:
        acc = EventAccumulator(str(path.parent))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars[tag] = [e.value for e in acc.Scalars(tag)]
    rows = csv_rows(out / "signals.csv")
    assert scalars["train_loss"] == pytest.approx([float(r["train_loss"]) for r in rows], rel=1e-5)
    history = [float(r["history_loss"]) for r in rows if r["history_loss"]]
    assert history and scalars["history_loss"] == pytest.approx(history, rel=1e-5)
    assert "interval" in scalars and "threshold" in scalars


def test_unknown_or_missing_tracker_is_refused_before_the_run(monkeypatch):
    import accelerate.utils

    from aimmerging.errors import ConfigError
    from aimmerging.runner import check_tracker

    check_tracker(None)
    with pytest.raises(ConfigError, match="'nonsense' is not an Accelerate tracker; known: .*tensorboard"):
        check_tracker("nonsense")
    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    with pytest.raises(ConfigError, match=r"wandb is not installed here \(pip install wandb\)"):
        check_tracker("wandb")


def test_mixed_precision_a_cpu_cannot_apply_is_named(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("on a GPU fp16 autocast applies")
    out = tmp_path / "run"
    check_ok(aimmerging("run", SMOKE, *sets(SMALL + ["data.tasks=[dbpedia,amazon]", "data.n_train=4",
                                                     "train.epochs=1", "train.mixed_precision=fp16"]),
                        "--output", out, "--quiet"))
    log = (out / "run.log").read_text()
    assert "train.mixed_precision: fp16 is not applied on cpu" in log
    assert "mixed precision: none (train.mixed_precision: fp16)" in log


def test_run_files_get_the_permissions_a_plain_write_would(tmp_path):
    """Atomic writes go through private temporary files and folders (mkstemp/mkdtemp: 0600 and
    0700); what lands in the run folder has the permissions of a plain write under the umask."""
    import os
    import stat

    from aimmerging.config import load_config

    cfg = load_config(SMOKE, SMALL + ["data.tasks=[dbpedia]", "data.n_train=8", "train.epochs=1"])
    old = os.umask(0o022)
    try:
        _run_on_one_thread(cfg, tmp_path / "run")
    finally:
        os.umask(old)
    out = tmp_path / "run"
    for name in ("metrics.json", "accuracy_matrix.csv", "signals.csv", "config.yaml"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    for folder in [p for p in (out / "adapters").iterdir()] + [out / "checkpoint"]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    adapter_files = list((out / "adapters").rglob("*.*"))
    assert any(p.name == "adapter_model.safetensors" for p in adapter_files)
    for path in adapter_files:              # safetensors writes its weights file 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_finished_run_holds_only_what_runs_write(two_runs):
    # what --overwrite replaces: a name missing from RUN_ENTRIES would make a finished run
    # look like a folder with a user's files in it
    from aimmerging.rundir import foreign_entries

    for run in two_runs:
        assert (run / "example_scores.csv").is_file()
        assert foreign_entries(run) == [], run
