"""Bad input to ``aimmerging run``: one line ``error: ...`` on stderr, exit code 2, no
traceback, and an existing run folder left exactly as it was. A NaN loss stops the run
naming the task and step and keeps the last checkpoint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from runhelp import DATA, SMALL, SMOKE, aimmerging, needs_data, sets

pytestmark = pytest.mark.timeout(300)

TASKS = ("dbpedia", "amazon")


def _base(data_dir) -> dict:
    return {"seed": 1,
            "data": {"dir": str(data_dir), "tasks": list(TASKS), "n_train": 8, "n_test": 4,
                     "max_input_tokens": 48, "max_target_tokens": 4},
            "model": {"name": "tiny-llama"},
            "method": {"name": "aimmerging", "memory_size": 4, "s_init": 2},
            "train": {"epochs": 1, "batch_size": 4, "lr": 3.0e-3},
            "eval": {"batch_size": 8, "max_new_tokens": 2}}


def _with(cfg: dict, dotted: str, value) -> dict:
    cfg = json.loads(json.dumps(cfg))
    *path, last = dotted.split(".")
    node = cfg
    for p in path:
        node = node.setdefault(p, {})
    node[last] = value
    return cfg


def _fake_run(folder: Path, cfg: dict | None = None) -> None:
    """A folder holding a (finished) run: what must survive every refused command.

    Its config.yaml is ``cfg`` when that is a valid config (so that ``--resume`` gets past
    the config comparison to the data and model checks)."""
    from aimmerging.config import build_config, dump_config
    from aimmerging.errors import ConfigError

    try:
        text = dump_config(build_config(cfg or {}))
    except ConfigError:
        text = "seed: 1\n"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(text)
    (folder / "metrics.json").write_text('{"op": 1.0}\n')
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "state.json").write_text('{"position": {"stage": 2, "step": 0}}\n')
    for name in ("adapter.safetensors", "method.safetensors", "rng.safetensors", "optimizer.pt",
                 "rehearsal_optimizer.pt"):          # read only when training resumes
        (folder / "checkpoint" / name).write_bytes(b"not read before training")
    (folder / "run.log").write_text("old log\n")


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    # --quiet shows the log's warnings: a run that failed part-way may have warned that the
    # CPU is busy (the load of this machine decides), and nothing else comes before the error
    lines = [x for x in proc.stderr.splitlines() if not x.startswith("the machine is busy: ")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def data_copy(tmp_path) -> Path:
    """A private copy of two tasks of the benchmark (the last file can be broken)."""
    dest = tmp_path / "data"
    for split in ("train", "test", "dev"):
        (dest / split).mkdir(parents=True)
        for t in TASKS:
            src = DATA / split / f"{t}_T5.json"
            if src.is_file():
                (dest / split / src.name).write_bytes(src.read_bytes())
    return dest


CONFIG_CASES = {
    "unknown top-level key": (("colour", "red"), "colour: unknown key"),
    "unknown section key": (("train.learning_rate", 0.1), "train.learning_rate: unknown key"),
    "unknown method": (("method.name", "magic"), "unknown method 'magic'"),
    "string for an integer": (("train.batch_size", "eight"), "train.batch_size"),
    "boolean for an integer": (("train.epochs", True), "train.epochs"),
    "list for a number": (("train.lr", [1]), "train.lr"),
    "section not a mapping": (("train", 5), "train"),
    "zero learning rate": (("train.lr", 0), "train.lr"),
    "negative learning rate": (("train.lr", -0.001), "train.lr"),
    "zero batch size": (("train.batch_size", 0), "train.batch_size"),
    "s_min above s_max": (("method.s_min", 200), "s_min (200) > method.s_max (128)"),
}
#: valid configs whose data or model is wrong (found after the config comparison of --resume)
INPUT_CASES = {
    "unknown task": (("data.tasks", ["dbpedia", "no_such_task"]), "no_such_task"),
    "unknown order": (("data.order", 42), "order 42"),
    "missing data folder": (("data.dir", "/no/such/folder"), "/no/such/folder"),
    "model folder without config": (("model.name", "/"), "model.name"),
}


@needs_data
@pytest.mark.parametrize("case, flag", [(c, f) for c in CONFIG_CASES for f in ("", "--overwrite")]
                         + [(c, f) for c in INPUT_CASES for f in ("", "--overwrite", "--resume")])
def test_bad_config(case, flag, tmp_path, data_copy):
    (key, value), needle = {**CONFIG_CASES, **INPUT_CASES}[case]
    cfg = _with(_base(data_copy), key, value)
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    if not flag:            # a new folder: not even created
        run_dir = tmp_path / "new_run"
        proc = aimmerging("run", cfg_file, "--output", run_dir)
        _assert_one_line_error(proc, needle)
        assert not run_dir.exists()
        return
    run_dir = tmp_path / "run"      # an existing run: left exactly as it was
    _fake_run(run_dir, cfg)
    before = _snapshot(run_dir)
    proc = aimmerging("run", cfg_file, "--output", run_dir, flag)
    _assert_one_line_error(proc, needle)
    assert _snapshot(run_dir) == before


BROKEN_FILES = {
    "truncated JSON": (lambda data: data[:500], "JSON"),
    "empty file": (lambda data: b"", "empty"),
    "object, not a list": (lambda data: b'{"id": "a", "input": "x", "output": "y"}', "list"),
    "lone surrogate": (lambda data: b'[{"id": "a", "input": "x\\ud800", "output": "y"}]',
                       "not valid Unicode"),
}


@needs_data
@pytest.mark.parametrize("case, flag", [(c, "--overwrite") for c in BROKEN_FILES]
                         + [("truncated JSON", "--resume")])
def test_broken_data_file(case, flag, tmp_path, data_copy):
    breaker, needle = BROKEN_FILES[case]
    bad = data_copy / "train" / "amazon_T5.json"
    bad.write_bytes(breaker(bad.read_bytes()))
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(_base(data_copy)))
    run_dir = tmp_path / "run"
    _fake_run(run_dir, _base(data_copy))
    before = _snapshot(run_dir)
    proc = aimmerging("run", cfg_file, "--output", run_dir, flag)
    _assert_one_line_error(proc, "amazon", needle)
    assert _snapshot(run_dir) == before


@needs_data
def test_existing_run_is_refused(tmp_path, data_copy):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(_base(data_copy)))
    run_dir = tmp_path / "run"
    _fake_run(run_dir)
    before = _snapshot(run_dir)
    proc = aimmerging("run", cfg_file, "--output", run_dir)
    _assert_one_line_error(proc, "already holds a run", "--resume", "--overwrite")
    assert _snapshot(run_dir) == before
    # --resume with another config than the run's: refused too
    proc = aimmerging("run", cfg_file, "--output", run_dir, "--resume")
    _assert_one_line_error(proc, "--resume", "config.yaml")
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize("content, needle", [("train: [1, 2\n", "not valid YAML"),
                                             (None, "config file not found")])
def test_unreadable_config_file(content, needle, tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    if content is not None:
        cfg_file.write_text(content)
    proc = aimmerging("run", cfg_file, "--output", tmp_path / "run")
    _assert_one_line_error(proc, needle)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, needles", [
    (["run", "c.yaml", "--threads", "0"], ["aimmerging run:", "--threads", "aimmerging run --help"]),
    (["run", "c.yaml", "--resume", "--overwrite"], ["not allowed with argument --resume"]),
    (["bogus"], ["invalid choice: 'bogus'", "aimmerging --help"]),
    (["compare", "c.yaml", "--seeds", "42", "--bootstrap", "0"],
     ["aimmerging compare:", "--bootstrap", "'0' is not a whole number >= 1"]),
])
def test_command_line_mistakes_are_one_line(args, needles, tmp_path):
    proc = aimmerging(*args)
    _assert_one_line_error(proc, *needles)


def test_overwrite_keeps_a_folder_with_other_files(tmp_path, data_copy):
    cfg_file, run_dir = tmp_path / "cfg.yaml", tmp_path / "project"
    cfg_file.write_text(yaml.safe_dump(_base(data_copy)))
    _fake_run(run_dir)
    (run_dir / "notes.txt").write_text("mine\n")
    (run_dir / "src").mkdir()
    before = _snapshot(run_dir)
    proc = aimmerging("run", cfg_file, "--output", run_dir, "--overwrite")
    _assert_one_line_error(proc, "--output", "notes.txt, src", "nothing was deleted")
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize("flag", ["", "--overwrite"])
def test_a_users_own_config_file_in_the_folder_is_kept(flag, tmp_path, data_copy):
    folder = tmp_path / "myproj"
    folder.mkdir()
    (folder / "config.yaml").write_text("# my notes\n" + yaml.safe_dump(_base(data_copy)))
    before = _snapshot(folder)
    proc = aimmerging("run", folder / "config.yaml", "--output", folder, *([flag] if flag else []))
    _assert_one_line_error(proc, "holds no run but has config.yaml", "nothing was changed")
    assert _snapshot(folder) == before


def test_resume_with_a_damaged_checkpoint_is_refused(tmp_path, data_copy):
    cfg = _base(data_copy)
    cfg_file, run_dir = tmp_path / "cfg.yaml", tmp_path / "run"
    cfg_file.write_text(yaml.safe_dump(cfg))
    _fake_run(run_dir, cfg)
    (run_dir / "checkpoint" / "rng.safetensors").unlink()
    before = _snapshot(run_dir)
    proc = aimmerging("run", cfg_file, "--output", run_dir, "--resume")
    _assert_one_line_error(proc, "checkpoint lacks rng.safetensors", "--overwrite")
    assert _snapshot(run_dir) == before


@pytest.mark.parametrize("damage, needle", [
    (lambda run: (run / "config.yaml").unlink(), "has a checkpoint but no config.yaml"),
    (lambda run: (run / "checkpoint" / "optimizer.pt").unlink(), "lacks optimizer.pt"),
    (lambda run: (run / "checkpoint" / "state.json").write_text(
        '{"position": {"stage": 1, "step": 0}, "world": 2}'), "started with 2 process(es), not 1"),
])
def test_resume_checks_the_checkpoint_before_anything(damage, needle, tmp_path, data_copy):
    cfg = _base(data_copy)
    cfg_file, run_dir = tmp_path / "cfg.yaml", tmp_path / "run"
    cfg_file.write_text(yaml.safe_dump(cfg))
    _fake_run(run_dir, cfg)
    damage(run_dir)
    before = _snapshot(run_dir)
    proc = aimmerging("run", cfg_file, "--output", run_dir, "--resume")
    _assert_one_line_error(proc, "--resume", needle)
    assert _snapshot(run_dir) == before


def test_overwrite_of_the_current_folder_keeps_the_folder(tmp_path, monkeypatch):
    from aimmerging.rundir import prepare_run_dir

    _fake_run(tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    prepare_run_dir(Path("."), resume=False, overwrite=True)
    assert (tmp_path / "run").is_dir() and not any((tmp_path / "run").iterdir())


def test_demo_replaces_only_a_demo_run(tmp_path):
    from aimmerging.demo import DEMO_CONFIG, _check_demo_folder
    from aimmerging.errors import ConfigError as Refused

    _fake_run(tmp_path / "other", {"data": {"n_train": 4}})
    with pytest.raises(Refused, match="holds a run that is not a demo run"):
        _check_demo_folder(tmp_path / "other", dict(DEMO_CONFIG))
    _fake_run(tmp_path / "demo", {**DEMO_CONFIG, "model": {"name": "tiny-llama"}})
    _check_demo_folder(tmp_path / "demo", dict(DEMO_CONFIG))        # another backbone: a demo run
    _check_demo_folder(tmp_path / "new", dict(DEMO_CONFIG))
    # a demo run of an earlier version, whose defaults the demo does not set were others
    earlier = {**DEMO_CONFIG, "method": {**DEMO_CONFIG["method"], "history_batch_size": None}}
    _fake_run(tmp_path / "earlier", earlier)
    _check_demo_folder(tmp_path / "earlier", dict(DEMO_CONFIG))
    changed = {**DEMO_CONFIG, "method": {**DEMO_CONFIG["method"], "s_init": 8}}
    _fake_run(tmp_path / "changed", changed)
    with pytest.raises(Refused, match="holds a run that is not a demo run"):
        _check_demo_folder(tmp_path / "changed", dict(DEMO_CONFIG))


def test_misspelled_model_name_lists_the_built_in_ones(tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"model": {"name": "tiny-lama"}}))
    proc = aimmerging("run", cfg_file, "--output", tmp_path / "run", HF_HUB_OFFLINE=1)
    _assert_one_line_error(proc, "'tiny-lama' (not a built-in name: smollm2-135m, tiny-llama, tiny-t5")
    assert not (tmp_path / "run").exists()


def test_output_is_a_file(tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump({"data": {"n_train": 4, "n_test": 2}}))
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    proc = aimmerging("run", cfg_file, "--output", out)
    _assert_one_line_error(proc, "not a folder")
    assert out.read_text() == "keep me"


@needs_data
def test_nan_loss_stops_with_the_task_and_step(tmp_path, monkeypatch, capsys):
    """A LoRA weight turned NaN after step 1: the real forward pass of step 2 gives a NaN loss."""
    import torch

    from aimmerging import cli
    from aimmerging.loop import ContinualTrainer

    original = ContinualTrainer._optimizer_step

    def poisoned(self, group, examples, sched):
        loss = original(self, group, examples, sched)
        if sched.last_epoch == 1:
            with torch.no_grad():
                next(p for p in self.net.parameters() if p.requires_grad).fill_(float("nan"))
        return loss

    monkeypatch.setattr(ContinualTrainer, "_optimizer_step", poisoned)
    run_dir = tmp_path / "run"
    over = SMALL + ["train.checkpoint_every=1", "data.tasks=[dbpedia]", "data.n_train=8"]
    code = cli.main(["run", str(SMOKE), *sets(over), "--output", str(run_dir), "--quiet"])
    err = capsys.readouterr().err
    proc = subprocess.CompletedProcess([], code, "", err)
    _assert_one_line_error(proc, "task dbpedia, step 2: training loss is nan",
                           f"the last checkpoint ({run_dir}/checkpoint) is kept")
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["position"] == {"stage": 0, "step": 1}       # the last checkpoint is kept
    assert not (run_dir / "metrics.json").exists()


@needs_data
def test_optimizer_overflow_is_one_line(tmp_path):
    """lr 1e38 overflows inside AdamW on step 1 (a RuntimeError): one line, no traceback."""
    run_dir = tmp_path / "run"
    over = SMALL + ["train.lr=1e38", "data.tasks=[dbpedia]", "data.n_train=8"]
    proc = aimmerging("run", SMOKE, *sets(over), "--output", run_dir, "--quiet")
    _assert_one_line_error(proc, "task dbpedia, step 1:", "overflow", "no checkpoint")
