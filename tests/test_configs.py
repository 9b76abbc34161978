"""Every shipped config validates; the order configs run the paper's task orders (table 12)."""

import logging
from pathlib import Path

import pytest
import yaml

from aimmerging.config import build_config, load_config, load_raw
from aimmerging.errors import ConfigError
from aimmerging.data.registry import ORDERS
from aimmerging.runner import task_order

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_order_configs_follow_the_paper(order):
    cfg = load_config(CONFIGS / f"order{order}.yaml")
    assert task_order(cfg) == list(ORDERS[order])
    assert cfg.method.name == "aimmerging"
    assert (cfg.model.lora_r, cfg.model.lora_alpha, cfg.model.lora_dropout) == (8, 32, 0.05)
    assert (cfg.train.lr, cfg.train.batch_size) == (3e-4, 8)
    m = cfg.method
    assert (m.s_init, m.window, m.s_min, m.s_max, m.gamma_forget, m.f_max) == (8, 3, 2, 128, 2.0, 3)


@pytest.mark.parametrize("name", ["cpu_small", "smoke", "demo"])
def test_small_configs_validate(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert len(task_order(cfg)) >= 3


def test_tasks_and_order_together_warn(caplog):
    cfg = load_config(CONFIGS / "smoke.yaml", ["data.order=2"])
    with caplog.at_level(logging.WARNING, logger="aimmerging"):
        tasks = task_order(cfg)
    assert tasks == list(cfg.data.tasks)
    assert "data.tasks" in caplog.text and "data.order" in caplog.text


def test_resume_accepts_logging_and_fwt_changes_only(tmp_path):
    from aimmerging.config import dump_config
    from aimmerging.errors import ConfigError
    from aimmerging.rundir import check_run_dir

    cfg = load_config(CONFIGS / "smoke.yaml")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "run.log").write_text("")                                 # what a run writes first
    later = load_config(CONFIGS / "smoke.yaml", ["method.log_history_loss=true",
                                                 "train.checkpoint_every=3"])
    later = later.model_copy(update={"single_task_scores": {"dbpedia": 50.0}})
    check_run_dir(run, later, resume=True, overwrite=False)          # accepted
    other = load_config(CONFIGS / "smoke.yaml", ["train.epochs=7"])
    with pytest.raises(ConfigError, match="train.epochs"):
        check_run_dir(run, other, resume=True, overwrite=False)


def test_a_run_saved_before_a_new_key_resumes_at_its_default(tmp_path):
    import yaml

    from aimmerging.config import dump_config
    from aimmerging.rundir import check_run_dir, config_differences

    cfg = load_config(CONFIGS / "smoke.yaml")
    old = yaml.safe_load(dump_config(cfg))
    del old["model"]["dtype"], old["method"]["skip_idle_rehearsal"]   # keys added later
    assert config_differences(old, cfg) == []
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    (run / "run.log").write_text("")
    check_run_dir(run, cfg, resume=True, overwrite=False)
    changed = load_config(CONFIGS / "smoke.yaml", ["model.dtype=bfloat16"])
    assert config_differences(old, changed)[0][0] == "model.dtype"


def test_a_run_saved_before_history_precision_ran_as_the_model_does(tmp_path):
    import yaml

    from aimmerging.config import dump_config
    from aimmerging.rundir import check_run_dir, config_differences

    cfg = load_config(CONFIGS / "smoke.yaml")               # history_precision: auto
    old = yaml.safe_load(dump_config(cfg))
    del old["method"]["history_precision"]                  # saved before the key existed
    assert config_differences(old, cfg) == [("method.history_precision", "model", "auto")]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    (run / "run.log").write_text("")
    with pytest.raises(ConfigError, match="written before method.history_precision existed, and "
                       "the run ran as method.history_precision=model; resume with "
                       "--set method.history_precision=model"):
        check_run_dir(run, cfg, resume=True, overwrite=False)
    same = load_config(CONFIGS / "smoke.yaml", ["method.history_precision=model"])
    assert config_differences(old, same) == []
    check_run_dir(run, same, resume=True, overwrite=False)


def test_a_run_saved_before_history_draw_resumes_with_its_own_memory_batch(tmp_path):
    import yaml

    from aimmerging.config import dump_config
    from aimmerging.rundir import check_run_dir, config_differences

    cfg = load_config(CONFIGS / "smoke.yaml")        # memory batch 2, one per merge interval
    old = yaml.safe_load(dump_config(cfg))
    old["method"]["history_batch_size"] = None       # as the version before saved it
    del old["method"]["history_draw"]
    assert config_differences(old, cfg) == [("method.history_batch_size", None, 2),
                                            ("method.history_draw", "step", "interval")]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    (run / "run.log").write_text("")
    with pytest.raises(ConfigError, match=r"method.history_batch_size is 2 here but null in .*; "
                       r".* was written before method.history_draw existed, and the run ran as "
                       r"method.history_draw=step; resume with --set "
                       r"method.history_batch_size=null method.history_draw=step "):
        check_run_dir(run, cfg, resume=True, overwrite=False)
    same = load_config(CONFIGS / "smoke.yaml",
                       ["method.history_batch_size=null", "method.history_draw=step"])
    assert config_differences(old, same) == []
    check_run_dir(run, same, resume=True, overwrite=False)


def test_resume_suggests_set_items_a_shell_passes_as_they_are(tmp_path):
    import shlex

    import yaml

    from aimmerging.config import dump_config
    from aimmerging.rundir import check_run_dir

    ran = load_config(CONFIGS / "smoke.yaml", ["data.tasks=[dbpedia,amazon]", "data.dir=/data/a b"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(ran))
    (run / "run.log").write_text("")
    with pytest.raises(ConfigError) as err:
        check_run_dir(run, load_config(CONFIGS / "smoke.yaml"), resume=True, overwrite=False)
    items = str(err.value).split("resume with --set ")[1].split(" (the run's own settings)")[0]
    again = load_config(CONFIGS / "smoke.yaml", shlex.split(items))    # as a shell splits them
    assert again.data.tasks == ["dbpedia", "amazon"] and again.data.dir == "/data/a b"
    assert yaml.safe_load(dump_config(again)) == yaml.safe_load(dump_config(ran))


def test_model_dtype_takes_auto_and_names_a_wrong_value():
    assert load_config(CONFIGS / "smoke.yaml", ["model.dtype=auto"]).model.dtype == "auto"
    with pytest.raises(ConfigError, match="model.dtype"):
        load_config(CONFIGS / "smoke.yaml", ["model.dtype=float64"])


def test_resume_takes_the_data_folder_however_it_is_spelled(tmp_path, monkeypatch):
    from aimmerging.config import dump_config
    from aimmerging.rundir import config_differences

    (tmp_path / "data" / "x").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    saved = yaml.safe_load(dump_config(load_config(CONFIGS / "smoke.yaml", ["data.dir=data/x"])))
    for spelling in ("data/x/", "./data/x", str(tmp_path / "data" / "x")):
        assert config_differences(saved, load_config(CONFIGS / "smoke.yaml", [f"data.dir={spelling}"])) == []
    assert config_differences(saved, load_config(CONFIGS / "smoke.yaml", ["data.dir=data"]))[0][0] == "data.dir"


def test_a_bad_set_value_is_named_by_its_set_item():
    with pytest.raises(ConfigError, match=r"^--set data.n_train=-5: data.n_train: "):
        load_config(CONFIGS / "smoke.yaml", ["data.n_train=3", "data.n_train=-5"])
    with pytest.raises(ConfigError, match=r"smoke.yaml: train.epochs: "):   # the file's own value
        build_config({**load_raw(CONFIGS / "smoke.yaml"), "train": {"epochs": 0}},
                     str(CONFIGS / "smoke.yaml"), ["data.n_train=3"])


def test_an_unknown_section_set_on_the_command_line_is_named_by_its_set_item():
    with pytest.raises(ConfigError, match=r"^--set bogus.key=1: bogus: unknown key"):
        load_config(CONFIGS / "smoke.yaml", ["bogus.key=1"])


def test_the_config_file_may_follow_the_set_values():
    from aimmerging.cli import build_parser
    from aimmerging.config import split_config_argument

    args = build_parser().parse_args(["run", "--set", "a.b=1", "c.d=2", "x.yaml", "--set", "e.f=3"])
    assert split_config_argument(args.config, args.overrides) == ("x.yaml", ["a.b=1", "c.d=2", "e.f=3"])
    args = build_parser().parse_args(["run", "x.yaml", "--set", "a.b=1", "c.d=2"])
    assert split_config_argument(args.config, args.overrides) == ("x.yaml", ["a.b=1", "c.d=2"])
    with pytest.raises(ConfigError, match="give the YAML config file"):
        split_config_argument(None, ["a.b=1"])
    with pytest.raises(ConfigError, match="'x.yaml', 'y' are not KEY=VALUE items"):
        split_config_argument(None, ["x.yaml", "y"])


def test_an_empty_tracker_is_no_tracker_and_all_needs_one_installed(monkeypatch):
    import accelerate.utils

    from aimmerging.runner import check_tracker

    assert load_config(CONFIGS / "smoke.yaml", ["train.report_to="]).train.report_to is None
    assert load_config(CONFIGS / "smoke.yaml", ["train.report_to=' '"]).train.report_to is None
    for name in dir(accelerate.utils):
        if name.startswith("is_") and name.endswith("_available"):
            monkeypatch.setattr(accelerate.utils, name, lambda: False)
    with pytest.raises(ConfigError, match="all: no tracker is installed here"):
        check_tracker("all")


def test_a_set_item_without_a_value_is_not_taken_for_the_config():
    from aimmerging.config import split_config_argument

    with pytest.raises(ConfigError, match=r"--set 'data.n_test': expected KEY=VALUE"):
        split_config_argument(None, ["data.n_train=8", "data.n_test"])


@pytest.mark.parametrize("raw, hint", [
    ({"train": {"epoch": 2}}, "train.epoch: unknown key (did you mean 'epochs'?)"),
    ({"trian": {"epochs": 2}}, "trian: unknown key (did you mean 'train'?)"),
    ({"method": {"name": "aimmergin"}}, "unknown method 'aimmergin' (did you mean 'aimmerging'?)"),
    ({"method": {"s_int": 3}}, "method.s_int: unknown key (did you mean 's_init'?)"),
])
def test_a_typo_gets_a_did_you_mean(raw, hint):
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    assert hint in str(err.value)


def test_a_key_far_from_any_gets_no_suggestion():
    with pytest.raises(ConfigError) as err:
        build_config({"train": {"zzzzqqq": 1}})
    assert "unknown key" in str(err.value) and "did you mean" not in str(err.value)


def test_task_and_method_names_get_a_did_you_mean():
    from aimmerging.compare import parse_methods
    from aimmerging.data.registry import get_task_info

    with pytest.raises(ConfigError, match=r"did you mean 'amazon'\?"):
        get_task_info("amazn")
    with pytest.raises(ConfigError, match=r"did you mean 'replay'\?"):
        parse_methods("seq_lora,replya")


def test_a_list_set_without_brackets_is_shown_the_bracketed_form():
    with pytest.raises(ConfigError, match=r'--set data.tasks=dbpedia,amazon: data.tasks: Input '
                                          r'should be a valid list \(a list goes in brackets.*'
                                          r'--set "data.tasks=\[dbpedia,amazon\]"\)'):
        load_config(CONFIGS / "smoke.yaml", ["data.tasks=dbpedia,amazon"])


def test_resume_with_another_config_altogether_names_the_runs_own(tmp_path):
    from aimmerging.config import dump_config
    from aimmerging.rundir import check_run_dir

    ran = load_config(CONFIGS / "smoke.yaml", ["seed=7", "train.lr=0.01", "data.n_train=8",
                                               "method.name=replay"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(ran))
    (run / "run.log").write_text("")
    with pytest.raises(ConfigError, match=r"--resume: 4 settings differ from the run's own "
                       r".*config.yaml \(.*seed.*\): this folder holds a run of another config; "
                       r"resume it with that file as the config \(aimmerging run "
                       r".*run/config.yaml --output .*run --resume\)"):
        check_run_dir(run, load_config(CONFIGS / "smoke.yaml"), resume=True, overwrite=False)
    # the command it gives: the saved config.yaml as the config resumes
    check_run_dir(run, load_config(run / "config.yaml"), resume=True, overwrite=False)


def test_every_bad_key_of_a_config_is_named(tmp_path):
    bad = tmp_path / "two.yaml"
    bad.write_text("data:\n  n_trian: 3\nfoo: 1\n")
    with pytest.raises(ConfigError, match=r"two.yaml: data.n_trian: unknown key \(did you mean "
                                          r"'n_train'\?\) \(and 1 more: foo\)"):
        load_config(bad)
