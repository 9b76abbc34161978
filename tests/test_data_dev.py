"""The dev split (eval.split: dev): records held out from the train file, and data.test_split's end."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from datapaths import DATA_ROOT

from aimmerging.config import build_config, dump_config, load_config, upgrade_saved
from aimmerging.data import Example, TaskInfo, load_split, load_task_data
from aimmerging.data.sampling import draw_task, held_out
from aimmerging.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
LONG = DATA_ROOT / "data_longsequence"
needs_data = pytest.mark.skipif(not LONG.is_dir(), reason="benchmark data is absent")
INFO = TaskInfo("t", "custom", "accuracy", None)


def _pool(n: int, labels: str = "aab", prefix: str = "x") -> list[Example]:
    return [Example(f"{prefix}_{i}", f"{prefix} input {i}", labels[i % len(labels)]) for i in range(n)]


def test_dev_is_held_out_from_the_training_sample_and_the_test_pool() -> None:
    train_pool, test_pool = _pool(90), _pool(30, prefix="y")
    test_pool[0] = Example("y_0", "x input 5", "a")        # a test input that is also in the train file
    dev = draw_task(INFO, train_pool, 40, 30, seed=3, split="dev", test_pool=test_pool)
    on_test = draw_task(INFO, train_pool, 40, 30, seed=3, split="test", test_pool=test_pool)
    assert dev.train == on_test.train                        # the same training sample either way
    assert (dev.split, dev.source, dev.available) == ("dev", "held out from the train file", 49)
    assert len(dev.test) == 30 and set(dev.test) <= set(train_pool)
    assert not {e.id for e in dev.test} & {e.id for e in dev.train}
    assert not {e.input for e in dev.test} & {e.input for e in on_test.test}
    assert "x input 5" not in {e.input for e in dev.test}
    again = draw_task(INFO, train_pool, 40, 30, seed=3, split="dev", test_pool=test_pool)
    assert again.test == dev.test                            # deterministic
    assert draw_task(INFO, train_pool, 40, 30, seed=4, split="dev", test_pool=test_pool).test != dev.test
    positions = [train_pool.index(e) for e in dev.test]
    assert positions == sorted(positions)                    # in file order


def test_dev_is_stratified_for_accuracy_only() -> None:
    pool = _pool(300, labels="aaaaab")                       # 250 a, 50 b
    dev = draw_task(INFO, pool, 100, 60, seed=0, split="dev")
    left = Counter(e.output for e in held_out(pool, [pool.index(e) for e in dev.train]))
    counts = Counter(e.output for e in dev.test)
    share = left["b"] / sum(left.values())
    assert abs(counts["b"] - 60 * share) < 1                 # largest-remainder share of 60
    rouge = draw_task(TaskInfo("t", "custom", "rougeL", None), pool, 100, 60, seed=0, split="dev")
    assert rouge.train == dev.train and len(rouge.test) == 60


def test_held_out_skips_duplicates_of_training_inputs() -> None:
    pool = [Example("a", "same", "x"), Example("b", "same", "x"), Example("c", "other", "x")]
    assert held_out(pool, [0]) == [pool[2]]
    assert held_out(pool, [2], exclude=[Example("t", "same", "y")]) == []


def test_no_record_left_for_dev_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"eval.split: dev: task t: no record of the train file is "
                                          r"left outside the training sample \(data.n_train takes 9 of 9\)"):
        draw_task(INFO, _pool(9), None, 5, seed=0, split="dev")
    with pytest.raises(ConfigError, match="not test or dev"):
        draw_task(INFO, _pool(9), 3, 5, seed=0, split="validation")


def test_fewer_dev_examples_than_asked_are_noted(tmp_path: Path) -> None:
    from aimmerging.runner import load_tasks, sample_size_notes

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"q": f"q{i}", "a": "y"}) + "\n" for i in range(10)))
    cfg = build_config({"data": {"n_train": 7, "n_test": 5, "tasks": [
        {"name": "mine", "train": str(train), "input": "q", "output": "a", "metric": "accuracy"}]},
        "eval": {"split": "dev"}})
    tasks = load_tasks(cfg)
    assert len(tasks[0].train) == 7 and len(tasks[0].test) == 3
    assert sample_size_notes(cfg, tasks) == [
        "mine: 5 dev examples asked for, only 3 records of the train file are left outside the "
        "training sample (and the test file): all are used"]


@needs_data
def test_benchmark_dev_split_keeps_the_training_sample() -> None:
    for task in ("dbpedia", "yahoo", "cb"):
        test = load_task_data(LONG, task, 200, 250, seed=42)
        dev = load_task_data(LONG, task, 200, 250, seed=42, split="dev")
        assert dev.train == test.train
        assert not {e.input for e in dev.test} & ({e.input for e in dev.train} |
                                                  {e.input for e in load_split(LONG, task, "test")})
        assert set(dev.test) <= set(load_split(LONG, task, "train"))
    from aimmerging.data.sampling import _largest_remainder

    dbpedia = load_task_data(LONG, "dbpedia", 200, 252, seed=42, split="dev")
    pool = load_split(LONG, "dbpedia", "train")
    left = Counter(e.output for e in held_out(pool, [pool.index(e) for e in dbpedia.train],
                                              load_split(LONG, "dbpedia", "test")))
    got = Counter(e.output for e in dbpedia.test)              # stratified: each label its share
    assert [got[k] for k in left] == _largest_remainder(list(left.values()), 252)
    assert len(left) == 14 and dbpedia.available == sum(left.values())


def test_data_test_split_is_refused_with_the_new_key() -> None:
    with pytest.raises(ConfigError, match=r"^c.yaml: data.test_split is gone .*use eval.split: dev"):
        build_config({"data": {"test_split": "dev"}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"^--set data.test_split=dev: data.test_split is gone"):
        load_config(REPO / "configs" / "smoke.yaml", ["data.test_split=dev"])
    assert build_config({"eval": {"split": "dev"}}).eval.split == "dev"
    with pytest.raises(ConfigError, match="eval.split"):
        build_config({"eval": {"split": "validation"}})


def test_a_saved_test_split_test_is_eval_split_test(tmp_path: Path) -> None:
    from aimmerging.rundir import check_run_dir, config_differences

    cfg = load_config(REPO / "configs" / "smoke.yaml")
    old = yaml.safe_load(dump_config(cfg))
    del old["eval"]["split"]
    old["data"]["test_split"] = "test"                       # what every earlier run saved
    assert config_differences(old, cfg) == []
    assert build_config(upgrade_saved(old)) == cfg
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    (run / "run.log").write_text("")
    check_run_dir(run, cfg, resume=True, overwrite=False)    # resumed as it ran
    dev = load_config(REPO / "configs" / "smoke.yaml", ["eval.split=dev"])
    assert [d[0] for d in config_differences(old, dev)] == ["eval.split"]
    old["data"]["test_split"] = "dev"                        # a run on the dev files: not today's dev
    assert "data.test_split" in [d[0] for d in config_differences(old, dev)]


def test_the_demo_stream_has_no_dev_split() -> None:
    from aimmerging.runner import load_tasks

    with pytest.raises(ConfigError, match="the demo stream .* has no dev split"):
        load_tasks(build_config({"eval": {"split": "dev"}}))
