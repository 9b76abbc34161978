"""`aimmerging compare`: several methods on the smoke config, the table, and run reuse."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from datapaths import DATA_ROOT

from aimmerging.cli import main
from aimmerging.compare import collect_table, compare_runs, markdown_table, table_row
from aimmerging.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "smoke.yaml"
DATA = DATA_ROOT / "data_longsequence"
METHODS = ["seq_lora", "replay", "fixed_interval", "aimmerging"]
SMALL = [f"data.dir={DATA}", "data.n_train=16", "data.n_test=8", "train.epochs=1",
         "method.s_init=2", "eval.max_new_tokens=2"]
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: the tiny model gains nothing from more, and on a busy machine
    thread oversubscription makes each step several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, one_thread) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"{DATA} is absent")
    out = tmp_path_factory.mktemp("cmp") / "out"
    code = main(["compare", str(CONFIG), "--methods", ",".join(METHODS), "--quiet",
                 "--set", *SMALL, "--output", str(out)])
    assert code == 0
    return out


@needs_data
def test_table_has_one_row_per_method(compared: Path) -> None:
    with open(compared / "comparison.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == METHODS
    assert list(rows[0]) == ["method", "OP", "FWT", "BWT", "train_seconds", "merges",
                             "effective_merges"]
    for r in rows:
        for col in ("OP", "FWT", "BWT", "train_seconds"):
            assert math.isfinite(float(r[col])), (r["method"], col, r[col])
        assert 0 <= int(r["effective_merges"]) <= int(r["merges"])
    by = {r["method"]: r for r in rows}
    assert int(by["seq_lora"]["merges"]) == int(by["replay"]["merges"]) == 0
    assert int(by["fixed_interval"]["merges"]) > 0
    data = json.loads((compared / "comparison.json").read_text())
    assert [r["method"] for r in data["rows"]] == METHODS
    assert data["seed"] == 42 and data["tasks"] == ["dbpedia", "amazon", "agnews"]
    assert set(data["single_task_scores"]) == {"dbpedia", "amazon", "agnews"}
    md = (compared / "comparison.md").read_text()
    assert "| Method | OP" in md and "smoke.yaml" in md and "single_task" in md
    assert "seed: 42" in md and "3 tasks" in md
    for m in METHODS:
        assert f"| {m} |" in md
        metrics = json.loads((compared / m / "metrics.json").read_text())
        assert metrics["fwt"] is not None                  # a0 came from the single_task run
        # each method's accuracy matrix, its last column as in metrics.json
        section = md.split(f"### {m}\n", 1)[1].split("###", 1)[0]
        last = [row[-1] for row in metrics["accuracy_matrix"]]
        assert [line.rstrip(" |").rsplit("| ", 1)[1] for line in section.splitlines()
                if line.startswith("| ") and not line.startswith("| task")] == [f"{v:.1f}" for v in last]
    assert (compared / "single_task" / "metrics.json").is_file()
    # the history loss is logged for the plots also where the method does not use it
    sig = (compared / "fixed_interval" / "signals.csv").read_text().splitlines()
    assert any(line.split(",")[4] for line in sig[1:] if line.split(",")[1] == "2")


@needs_data
def test_second_call_reuses_and_resumes(compared: Path, one_thread) -> None:
    stamps = {m: (compared / m / "metrics.json").stat().st_mtime_ns
              for m in METHODS + ["single_task"]}
    # a run with a checkpoint but no metrics.json is resumed (here: from its last checkpoint)
    (compared / "seq_lora" / "metrics.json").unlink()
    rows = compare_runs(CONFIG, METHODS, SMALL, compared, progress=False)
    assert [r["method"] for r in rows] == METHODS
    for m in ("replay", "fixed_interval", "aimmerging", "single_task"):
        assert (compared / m / "metrics.json").stat().st_mtime_ns == stamps[m], m
    assert (compared / "seq_lora" / "metrics.json").is_file()
    assert collect_table(compared, METHODS) == rows
    assert [r["method"] for r in collect_table(compared)] == METHODS


def test_unknown_method_exits_2(tmp_path: Path, capsys) -> None:
    code = main(["compare", str(CONFIG), "--methods", "seq_lora,nope", "--output",
                 str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope" in err and "aimmerging_no_ls" in err       # lists the known methods
    assert not (tmp_path / "o").exists()


def test_bad_override_fails_before_running(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.epochs"):
        compare_runs(CONFIG, ["seq_lora"], ["train.epochs=0"], tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_train_seconds_is_at_least_its_timed_parts(tmp_path: Path) -> None:
    d = tmp_path / "replay"
    d.mkdir()
    timing = {"train_seconds": 5.0, "train_step_seconds": 8.0, "monitor_seconds": 3.0,
              "rehearsal_seconds": 1.5, "merge_seconds": 0.5}   # a resumed run of an old version
    (d / "metrics.json").write_text(json.dumps({
        "method": "replay", "op": 50.0, "bwt": -1.0, "merges": 0, "effective_merges": 0,
        "timing_seconds": timing, "tasks": ["a"], "accuracy_matrix": [[60.0]]}))
    assert table_row(d)["train_seconds"] == 10.0      # 8 + 3 + 1.5 + 0.5, less monitoring (3)


def test_train_seconds_leaves_out_monitoring_only_for_plots(tmp_path: Path) -> None:
    timing = {"train_seconds": 10.0, "monitor_seconds": 3.0}
    for method, expected in (("replay", 7.0), ("aimmerging_no_fs", 7.0), ("aimmerging", 10.0),
                             ("aimmerging_reference", 10.0)):
        d = tmp_path / method
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({
            "method": method, "op": 50.0, "bwt": -1.0, "fwt": None, "merges": 2,
            "effective_merges": 1, "timing_seconds": timing, "tasks": ["a", "b"],
            "accuracy_matrix": [[60.0, 55.0], [None, 45.0]]}))
        row = table_row(d, a0={"a": 50.0, "b": 40.0})
        assert row["train_seconds"] == expected, method
        assert row["FWT"] == pytest.approx(7.5)             # ((60-50)+(45-40))/2 from a0
    md = markdown_table([table_row(tmp_path / "replay")], {"config": "x.yaml", "seed": 1,
                                                           "tasks": ["a", "b"]})
    assert "| replay | 50.00 | - | -1.00 | 7.0 | 2 | 1 |" in md


def test_reused_run_is_refused_only_for_settings_that_change_training(tmp_path: Path) -> None:
    from aimmerging.compare import _check_same_config
    from aimmerging.config import dump_config, load_config

    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    run = tmp_path / "aimmerging"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(load_config(smoke)))
    asked = load_config(smoke, ["method.log_history_loss=true"])
    asked = asked.model_copy(update={"single_task_scores": {"dbpedia": 60.0}})
    _check_same_config(asked, run)                   # logging and a0 only: reused
    with pytest.raises(ConfigError, match="train.epochs=2, not 9 as asked"):
        _check_same_config(load_config(smoke, ["train.epochs=9"]), run)
    with pytest.raises(ConfigError, match=r"method.history_batch_size=2, not null, "
                       r"method.history_draw=interval, not step as asked: .* --set "
                       r"method.history_batch_size=2 method.history_draw=interval tabulates"):
        _check_same_config(load_config(smoke, ["method.history_batch_size=null",
                                               "method.history_draw=step"]), run)


def test_compare_refuses_a_finished_run_of_other_settings_before_running(tmp_path: Path) -> None:
    from aimmerging.config import dump_config, load_config

    out = tmp_path / "cmp"
    (out / "replay").mkdir(parents=True)
    (out / "replay" / "config.yaml").write_text(dump_config(load_config(
        CONFIG, ["train.lr=0.003", "method.name=replay", "method.log_history_loss=true"])))
    (out / "replay" / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="train.lr=0.003, not 0.01 as asked"):
        compare_runs(CONFIG, ["seq_lora", "replay"], ["train.lr=0.01"], out, fwt=False,
                     progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["replay"]     # seq_lora did not run


def test_config_may_follow_the_set_values(tmp_path: Path, monkeypatch) -> None:
    import aimmerging.compare as compare

    seen = {}
    monkeypatch.setattr(compare, "compare_runs", lambda config, methods, overrides, output, **kw:
                        seen.update(config=config, overrides=overrides) or [])
    code = main(["compare", "--methods", "replay", "--output", str(tmp_path / "o"),
                 "--set", "train.epochs=1", "data.n_train=4", str(CONFIG)])
    assert code == 0
    assert seen == {"config": str(CONFIG), "overrides": ["train.epochs=1", "data.n_train=4"]}
    assert main(["compare", "--methods", "replay", "--output", str(tmp_path / "o"),
                 "--set", "train.epochs=1"]) == 2


def test_compare_refuses_an_unresumable_run_before_running(tmp_path: Path) -> None:
    from aimmerging.config import dump_config, load_config

    out = tmp_path / "cmp"
    folder = out / "replay"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "config.yaml").write_text(dump_config(load_config(
        CONFIG, ["method.name=replay", "method.log_history_loss=true"])))
    (folder / "run.log").write_text("")
    for name in ("state.json", "adapter.safetensors", "method.safetensors", "rng.safetensors",
                 "rehearsal_optimizer.pt"):                        # no optimizer.pt
        (folder / "checkpoint" / name).write_text('{"position": {"stage": 0, "step": 2}}')
    with pytest.raises(ConfigError, match=r"replay cannot be resumed: .*lacks optimizer.pt; nothing "
                                          r"was run: remove the folder"):
        compare_runs(CONFIG, ["seq_lora", "replay"], [], out, fwt=False, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["replay"]     # seq_lora did not run


def test_without_output_the_runs_go_to_a_folder_named_after_the_config(tmp_path: Path, monkeypatch,
                                                                          capsys) -> None:
    import aimmerging.compare as compare
    import aimmerging.multiseed as multiseed

    seen = {}
    monkeypatch.chdir(tmp_path)

    def fake(config, methods, *rest, **kw):
        output = rest[-1]
        seen.setdefault("outputs", []).append(output)
        Path(output).mkdir(parents=True, exist_ok=True)
        (Path(output) / "comparison.md").write_text("table\n")
        return []

    monkeypatch.setattr(compare, "compare_runs", fake)
    monkeypatch.setattr(multiseed, "compare_seeds", lambda config, methods, seeds, overrides,
                        output, **kw: fake(config, methods, output))
    assert main(["compare", str(CONFIG), "--methods", "replay"]) == 0
    assert main(["compare", str(CONFIG), "--methods", "replay", "--seeds", "42,43"]) == 0
    assert seen["outputs"] == [str(Path("runs") / "smoke_compare"), str(Path("runs") / "smoke_seeds")]
    assert "comparison folder: runs/smoke_compare (--output DIR chooses another)" in capsys.readouterr().out
    # without --methods: the study's main methods, said on the terminal, with or without --seeds
    seen.clear()
    monkeypatch.setattr(compare, "compare_runs", lambda config, methods, *rest, **kw:
                        seen.setdefault("methods", []).append(methods) or fake(config, methods, *rest))
    monkeypatch.setattr(multiseed, "compare_seeds", lambda config, methods, seeds, overrides,
                        output, **kw: seen.setdefault("methods", []).append(methods)
                        or fake(config, methods, output))
    capsys.readouterr()
    assert main(["compare", str(CONFIG)]) == 0
    assert main(["compare", str(CONFIG), "--seeds", "42,43"]) == 0
    assert seen["methods"] == [",".join(compare.DEFAULT_METHODS)] * 2
    assert "replay" in compare.DEFAULT_METHODS and "aimmerging" in compare.DEFAULT_METHODS
    assert f"methods: {','.join(compare.DEFAULT_METHODS)} (--methods m1,m2 chooses others)" \
        in capsys.readouterr().out
