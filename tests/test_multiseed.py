"""Comparisons over seeds on hand-made run folders (no training): the fusion cases, the
paired bootstrap, the tables, ``--collect`` and ``--from``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from aimmerging.cli import main
from aimmerging.errors import ConfigError
from aimmerging.metrics import compute_metrics
from aimmerging.multiseed import COLLECTED, collect_results, tabulate
from aimmerging.multiseed_report import RUN_COLUMNS, run_record
from aimmerging.results import example_scores_csv
from aimmerging.stats import (ExampleScores, decimals, fusion_case, fusion_counts, mean_std,
                              paired_bootstrap)
from aimmerging.traces import MERGE_FIELDS, rows_to_csv

TASKS = ["a", "b"]


def _scores(final, diag=None, tasks=("t",)):
    """ExampleScores with ids 0..n-1 for each task."""
    diag = diag if diag is not None else [None] * len(final)
    return ExampleScores(list(tasks), [[str(i) for i in range(len(f))] for f in final],
                         [list(f) for f in final], [None if d is None else list(d) for d in diag])


# --- fusion cases -----------------------------------------------------------------------------
def test_fusion_case_of_each_weight_pair() -> None:
    assert fusion_case(1, 0) == "no-op"
    assert fusion_case("0.5", "0.5") == "tie"
    assert fusion_case(0.0, 1.0) == "discard"
    for pair in ((0.6, 0.4), (0.4, 0.6), (1.0, 1.0), (0.0, 0.0), (0.75, 0.25)):
        assert fusion_case(*pair) == "mixed", pair
    with pytest.raises(ValueError, match="not finite"):
        fusion_case("nan", 0)


def test_fusion_counts_from_a_hand_written_merge_trace(tmp_path: Path) -> None:
    text = ("task,stage,step,interval_run,next_interval,lambda,threshold,activations,alpha_new,"
            "alpha_past,rehearsal_steps,rehearsal_skipped,l1_change\n"
            "b,2,8,8,4,,1.2,0,1,0,4,1,0.3\n"
            "b,2,12,4,4,0.5,1.2,1,0,1,2,0,0.2\n"
            "b,2,16,4,8,0.4,1.2,0,0.5,0.5,4,0,0.1\n"
            "b,2,24,8,8,0.4,1.2,2,0.666667,0.333333,4,0,0.1\n"
            "b,2,30,8,8,0.4,1.2,2,0,1,4,0,0.1\n")
    (tmp_path / "merge_trace.csv").write_text(text)
    from aimmerging.traces import read_csv_rows

    assert fusion_counts(read_csv_rows(tmp_path / "merge_trace.csv")) == {
        "no-op": 1, "tie": 1, "discard": 2, "mixed": 1}
    assert fusion_counts([]) == {"no-op": 0, "tie": 0, "discard": 0, "mixed": 0}
    with pytest.raises(ValueError, match="row 2: alpha_new/alpha_past"):
        fusion_counts([{"alpha_new": "1", "alpha_past": "0"}, {"alpha_new": "", "alpha_past": "1"}])


def test_mean_and_sample_standard_deviation() -> None:
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert mean_std([5.0, None]) == (5.0, None)
    assert mean_std([None]) == (None, None)


@pytest.mark.parametrize("value, digits, signed, text", [
    (2.9499999999999993, 1, False, "3.0"),       # a mean of 2.95, as float addition gives it
    (63.25, 1, False, "63.3"),                    # a half goes away from 0, not to the even
    (-11.149999999999999, 1, True, "-11.2"),
    (0.754983, 2, False, "0.75"),                 # rounded once (0.755 would give 0.76)
    (1.36504, 2, False, "1.37"),
    (-0.04, 1, True, "+0.0"),                     # no "-0.0"
    (4.0, 1, True, "+4.0"),
    (-2.5, 0, True, "-3"),
])
def test_decimals_rounds_once_and_a_half_away_from_zero(value, digits, signed, text) -> None:
    assert decimals(value, digits, signed) == text


# --- the bootstrap ----------------------------------------------------------------------------
def test_identical_runs_give_exactly_zero() -> None:
    run = _scores([[1, 0, 1, 1, 0], [0.25, 0.5, 1, 0]], [[1, 1, 1, 0, 0], [0.5, 0.5, 1, 1]],
                  tasks=("a", "b"))
    out = paired_bootstrap([(run, run), (run, run)], draws=300)
    assert out == {"OP": (0.0, 0.0), "BWT": (0.0, 0.0), "LA": (0.0, 0.0)}


def test_better_on_every_example_gives_an_interval_above_zero() -> None:
    ref = _scores([[0.2, 0.5, 0.1, 0.9], [0.3, 0.0, 0.4, 0.6]], tasks=("a", "b"))
    better = _scores([[0.3, 0.6, 0.2, 1.0], [0.5, 0.1, 0.45, 0.7]], tasks=("a", "b"))
    low, high = paired_bootstrap([(better, ref)], draws=500)["OP"]
    assert 0 < low <= high
    low, high = paired_bootstrap([(ref, better)], draws=500)["OP"]
    assert low <= high < 0


def test_one_example_per_task_leaves_only_the_seed_draw() -> None:
    # seeds differing by 10 and by 20 points: a draw's mean is 10, 15 or 20 (1/4, 1/2, 1/4)
    ref = _scores([[0.0]])
    pairs = [(_scores([[0.1]]), ref), (_scores([[0.2]]), ref)]
    low, high = paired_bootstrap(pairs, draws=2000)["OP"]
    assert (low, high) == (pytest.approx(10.0), pytest.approx(20.0))


def test_one_seed_two_examples_by_hand() -> None:
    # per-example differences [1, 0]: a draw's mean is 0, 50 or 100 points (1/4, 1/2, 1/4)
    method, ref = _scores([[1, 1]]), _scores([[0, 1]])
    assert paired_bootstrap([(method, ref)], draws=2000)["OP"] == (0.0, 100.0)
    draws = paired_bootstrap([(method, ref)], draws=1, seed=7)["OP"]
    assert draws[0] == draws[1] and draws[0] in (0.0, 50.0, 100.0)


def test_bwt_difference_uses_final_minus_diagonal_of_tasks_before_the_last() -> None:
    # same final scores, but the method's diagonal is 1 lower on every example of task a:
    # its forgetting is smaller, BWT difference exactly +100 points; task b (the last) not used
    ref = _scores([[0, 0, 0], [1, 0, 1]], [[1, 1, 1], [0, 0, 0]], tasks=("a", "b"))
    method = _scores([[0, 0, 0], [0, 0, 0]], [[0, 0, 0], [1, 1, 1]], tasks=("a", "b"))
    out = paired_bootstrap([(method, ref)], draws=200)
    assert out["BWT"] == (100.0, 100.0)
    assert out["OP"][0] < 0
    no_diag = _scores([[0, 0, 0], [0, 0, 0]], tasks=("a", "b"))
    assert paired_bootstrap([(no_diag, ref)], draws=10)["BWT"] is None


def test_la_difference_uses_every_diagonal_and_leaves_op_and_bwt_as_they_were() -> None:
    # the method's diagonal is 1 higher on every example of task a and equal on task b: LA is
    # +50 points exactly (the mean over the 2 tasks); with no diagonal at all LA is None
    ref = _scores([[0, 1, 0], [1, 0, 1]], [[0, 0, 0], [1, 1, 1]], tasks=("a", "b"))
    method = _scores([[1, 1, 0], [0, 0, 1]], [[1, 1, 1], [1, 1, 1]], tasks=("a", "b"))
    out = paired_bootstrap([(method, ref)], draws=300, seed=3)
    assert out["LA"] == (50.0, 50.0)
    assert paired_bootstrap([(method, method)], draws=50)["LA"] == (0.0, 0.0)
    # LA draws no random numbers of its own: OP and BWT are those of a bootstrap without LA
    no_diag = _scores([[1, 1, 0], [0, 0, 1]], tasks=("a", "b"))
    no_diag_ref = _scores([[0, 1, 0], [1, 0, 1]], tasks=("a", "b"))
    without = paired_bootstrap([(no_diag, no_diag_ref)], draws=300, seed=3)
    assert without["LA"] is None and without["OP"] == out["OP"]


def test_learning_accuracy_is_the_mean_of_the_diagonal() -> None:
    from aimmerging.metrics import compute_metrics, learning_accuracy

    matrix = [[80.0, 70.0, 60.0], [None, 50.0, 40.0], [None, None, 90.0]]
    assert learning_accuracy(matrix) == pytest.approx((80 + 50 + 90) / 3)
    got = compute_metrics(matrix)
    assert got["op"] == pytest.approx(learning_accuracy(matrix) + got["bwt"] * 2 / 3)
    assert learning_accuracy([[None, 70.0], [None, 40.0]]) is None       # mtl: no diagonal
    assert learning_accuracy(None) is None
    with pytest.raises(ValueError, match=r"a\[1\]\[1\]"):
        learning_accuracy([[1.0, 2.0], [None, float("nan")]])


def test_the_bootstrap_is_reproducible_and_refuses_other_examples() -> None:
    a = _scores([[1, 0, 1, 0, 1, 1]])
    b = _scores([[0, 0, 1, 1, 0, 1]])
    assert paired_bootstrap([(a, b)], draws=100) == paired_bootstrap([(a, b)], draws=100)
    other = ExampleScores(["t"], [["x", "1", "2", "3", "4", "5"]], b.final, b.diag)
    with pytest.raises(ValueError, match="task t was evaluated on other test examples"):
        paired_bootstrap([(a, other)])
    assert paired_bootstrap([]) == {"OP": None, "BWT": None, "LA": None}


# --- run folders -------------------------------------------------------------------------------
def _fake_run(d: Path, method: str, seed: int, per_example: dict, merges=(), a0=None) -> None:
    """A finished run folder: ``per_example`` {task: {after task: [score 0-1, ...]}}."""
    d.mkdir(parents=True)
    k = len(TASKS)
    matrix = [[None] * k for _ in range(k)]
    for i, t in enumerate(TASKS):
        for j, after in enumerate(TASKS):
            v = per_example[t].get(after)
            if v is not None:
                matrix[i][j] = 100.0 * sum(v) / len(v)
    scores = {t: {"ids": [f"{t}{n}" for n in range(len(per_example[t][TASKS[-1]]))],
                  "after": per_example[t]} for t in TASKS}
    (d / "example_scores.csv").write_text(example_scores_csv(scores, TASKS))
    metrics = {"method": method, "seed": seed, "tasks": TASKS, "accuracy_matrix": matrix,
               "merges": len(merges), "timing_seconds": {"train_seconds": 10.0 + seed},
               "counters": {"train_steps": 12, "merges": len(merges)}}
    if method == "single_task":
        metrics.update(op=50.0, bwt=None, fwt=None, single_task_scores=a0)
    else:
        metrics.update({k2: v for k2, v in compute_metrics(matrix).items() if k2 in ("op", "bwt")},
                       fwt=None)
    (d / "metrics.json").write_text(json.dumps(metrics))
    rows = [{"task": "b", "stage": 2, "step": 4 * (n + 1), "alpha_new": an, "alpha_past": ap,
             "rehearsal_steps": 3, "rehearsal_skipped": int(ap == 0)}
            for n, (an, ap) in enumerate(merges)]
    (d / "merge_trace.csv").write_text(rows_to_csv(rows, MERGE_FIELDS))
    (d / "config.yaml").write_text(f"seed: {seed}\nmodel:\n  name: tiny-llama\nmethod:\n  name: {method}\n")
    (d / "accuracy_matrix.csv").write_text("task,a,b\n")
    (d / "signals.csv").write_text("task,stage,step\n")              # not collected


def _study(root: Path, seeds=(1, 2)) -> Path:
    for s in seeds:
        _fake_run(root / "single_task" / f"seed{s}", "single_task", s,
                  {"a": {"a": [1, 1, 0, 1], "b": [1, 1, 0, 1]}, "b": {"b": [1, 0, 1]}},
                  a0={"a": 75.0, "b": 60.0})
        _fake_run(root / "replay" / f"seed{s}", "replay", s,
                  {"a": {"a": [1, 1, 0, 1], "b": [1, 0, 0, 1]}, "b": {"b": [1, 0, 1]}})
        _fake_run(root / "aimmerging" / f"seed{s}", "aimmerging", s,
                  {"a": {"a": [1, 1, 1, 1], "b": [1, 1, 1, 1]}, "b": {"b": [1, 1, 1]}},
                  merges=[(1, 0), (0.5, 0.5), (0, 1), (0, 1), (0.6, 0.4)])
        _fake_run(root / "seq_lora" / f"seed{s}", "seq_lora", s,
                  {"a": {"a": [1, 1, 0, 1], "b": [1, 0, 0, 1]}, "b": {"b": [1, 0, 1]}})
    return root


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_tabulate_gives_means_intervals_and_fusion_counts(tmp_path: Path) -> None:
    root = _study(tmp_path / "study")
    summary = tabulate(root, progress=False)
    rows = {r["method"]: r for r in _csv(root / "comparison.csv")}
    assert list(rows) == ["seq_lora", "replay", "aimmerging"]        # the one-seed table's order
    assert summary["reference"] == "replay" and summary["missing"] == []
    aim, seq = rows["aimmerging"], rows["seq_lora"]
    assert float(aim["OP_mean"]) == 100.0 and float(aim["OP_std"]) == 0.0 and aim["seeds"] == "2"
    assert float(rows["replay"]["OP_mean"]) == pytest.approx((50 + 200 / 3) / 2, abs=1e-4)
    assert float(aim["FWT_mean"]) == pytest.approx(((100 - 75) + (100 - 60)) / 2)  # a0 of its seed
    assert float(aim["OP_diff"]) == pytest.approx(100 - (50 + 200 / 3) / 2, abs=1e-4)
    assert 0 < float(aim["OP_diff_low"]) <= float(aim["OP_diff_high"])
    # replay forgot one of task a's 4 examples: a draw without it (p = (3/4)^4) has no difference
    assert float(aim["BWT_diff"]) == 25.0 and float(aim["BWT_diff_low"]) == 0.0
    # seq_lora made the same predictions as replay: an interval of exactly [0, 0]
    assert (float(seq["OP_diff_low"]), float(seq["OP_diff_high"])) == (0.0, 0.0)
    assert rows["replay"]["OP_diff"] == ""                              # the reference
    runs = _csv(root / "comparison_runs.csv")
    assert list(runs[0]) == list(RUN_COLUMNS)
    a42 = [r for r in runs if r["method"] == "aimmerging" and r["seed"] == "1"][0]
    assert (a42["no_op"], a42["tie"], a42["discard"], a42["mixed"], a42["merges"]) == \
        ("1", "1", "2", "1", "5")
    assert (a42["rehearsal_steps_run"], a42["rehearsal_steps_skipped"], a42["main_steps"]) == \
        ("12", "3", "12")
    assert a42["train_seconds"] == "11.0"
    md = (root / "comparison.md").read_text()
    assert "Every run of every method at every seed is present" in md
    # 2 seeds: no claim either way, so nothing in bold
    assert "| seq_lora | 2 |" in md and "too few seeds for a claim (fewer than 3)" in md
    assert "| aimmerging | 2 | 100.00 ± 0.00 |" in md and "**" not in md.split("## Runs")[0]
    assert "| aimmerging | 1 | 100.00 | 32.50 | 0.00 | 100.00 | 1 | 1 | 2 | 1 | 5 | 12 | 3 | 12 | 11.0 |" in md
    # LA: aimmerging's diagonal is 100 on both tasks, replay's 75 (a) and 200/3 (b); seq_lora
    # learned each task exactly as replay did: a difference of exactly 0
    assert float(aim["LA_mean"]) == 100.0 and float(a42["LA"]) == 100.0
    assert float(aim["LA_diff"]) == pytest.approx(100 - (75 + 200 / 3) / 2, abs=1e-4)
    assert 0 < float(aim["LA_diff_low"]) <= float(aim["LA_diff_high"])
    assert (float(seq["LA_diff_low"]), float(seq["LA_diff_high"])) == (0.0, 0.0)
    assert f"LA − replay [95% interval]" in md
    assert (root / "comparison.png").stat().st_size > 1000
    assert json.loads((root / "comparison.json").read_text())["rows"] == summary["rows"]


def test_three_seeds_make_claims_and_say_no_measurable_difference(tmp_path: Path) -> None:
    root = _study(tmp_path / "study", seeds=(1, 2, 3))
    tabulate(root, ["replay", "aimmerging", "seq_lora"], progress=False)
    md = (root / "comparison.md").read_text()
    aim = [line for line in md.splitlines() if line.startswith("| aimmerging | 3 |")][0]
    seq = [line for line in md.splitlines() if line.startswith("| seq_lora | 3 |")][0]
    assert "| **+" in aim and "too few seeds" not in aim           # above replay on every example
    assert "**" not in seq and "; no measurable difference" in seq  # identical to replay


def test_a_partial_study_lists_its_missing_runs(tmp_path: Path) -> None:
    root = _study(tmp_path / "study", seeds=(1, 2, 3))
    (root / "aimmerging" / "seed3" / "metrics.json").unlink()
    (root / "aimmerging" / "seed3" / "run.log").write_text("")           # started, not finished
    import shutil

    shutil.rmtree(root / "single_task" / "seed2")
    summary = tabulate(root, ["replay", "aimmerging"], progress=False)
    assert summary["missing"] == [{"method": "aimmerging", "seed": 3, "why": "not finished"},
                                  {"method": "single_task", "seed": 2, "why": "absent"}]
    rows = {r["method"]: r for r in summary["rows"]}
    assert rows["aimmerging"]["seeds"] == 2 and rows["aimmerging"]["paired_seeds"] == 2
    assert rows["replay"]["seeds"] == 3
    runs = {(r["method"], r["seed"]): r for r in summary["runs"]}
    assert runs[("aimmerging", 2)]["FWT"] is None and runs[("aimmerging", 1)]["FWT"] is not None
    md = (root / "comparison.md").read_text()
    assert "- aimmerging seed 3: not finished" in md and "- single_task seed 2: absent" in md


def test_collect_copies_only_the_small_files_of_finished_runs(tmp_path: Path) -> None:
    root = _study(tmp_path / "study")
    (root / "replay" / "seed3").mkdir()
    (root / "replay" / "seed3" / "config.yaml").write_text("seed: 3\n")
    (root / "replay" / "seed3" / "run.log").write_text("")               # unfinished: not copied
    dest = tmp_path / "docs" / "cpu_small"
    code = main(["compare", "--from", str(root), "--collect", str(dest), "--quiet"])
    assert code == 0
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    runs = [f"{m}/seed{s}" for m in ("aimmerging", "replay", "seq_lora", "single_task") for s in (1, 2)]
    present = [f"{r}/{n}" for r in runs for n in COLLECTED if (root / r / n).is_file()]
    written = ("config.yaml", "metrics.json", "accuracy_matrix.csv", "merge_trace.csv",
               "example_scores.csv", "signals.csv")                # what these fake runs hold
    assert all(f"{r}/{n}" in present for r in runs for n in written)
    assert copied == sorted(present + [
        f"comparison{x}" for x in (".csv", ".json", ".md", ".png", "_runs.csv")])
    for name in present:
        assert (dest / name).read_bytes() == (root / name).read_bytes()
    # recomputed from the copies: the same tables
    tabulate(root, progress=False)
    for name in ("comparison.csv", "comparison_runs.csv"):
        assert (dest / name).read_text() == (root / name).read_text()
    md = (dest / "comparison.md").read_text()
    assert f"`aimmerging compare --from {dest} --reference replay`" in md
    with pytest.raises(ConfigError, match="is the --from folder"):
        collect_results(root, root)


def test_from_into_another_folder_and_its_mistakes(tmp_path: Path, capsys) -> None:
    root = _study(tmp_path / "study")
    out = tmp_path / "out"
    assert main(["compare", "--from", str(root), "--reference", "seq_lora", "--bootstrap", "50",
                 "--output", str(out), "--quiet"]) == 0
    data = json.loads((out / "comparison.json").read_text())
    assert data["reference"] == "seq_lora" and data["bootstrap"]["draws"] == 50
    assert not (root / "comparison.csv").exists()
    assert "--bootstrap 50 --output" in data["command"]
    capsys.readouterr()
    for args, needle in (
            (["--from", str(root), "--reference", "ewc"], "--reference: ewc is not among"),
            (["--from", str(tmp_path / "nope")], "is not a folder"),
            (["--from", str(tmp_path)], "holds no run folder <method>/seed<S>/"),
            (["--from", str(root), "--set", "seed=1"], "give no config file, --set"),
            (["--from", str(root), "--seeds", "4x"], "--seeds: '4x' is not a whole number"),
            (["--methods", "replay", "--output", str(out), "--reference", "replay", str(root)],
             "apply with --seeds or --from")):
        assert main(["compare", *args, "--quiet"]) == 2, args
        assert needle in capsys.readouterr().err, args


def test_a_run_in_the_wrong_folder_is_refused(tmp_path: Path) -> None:
    root = _study(tmp_path / "study", seeds=(1,))
    (root / "replay" / "seed1").rename(root / "replay" / "seed5")
    with pytest.raises(ConfigError, match=r"seed5/metrics.json: seed is 1, not 5"):
        run_record(root / "replay" / "seed5", "replay", 5, None)


def test_runs_of_other_settings_are_not_tabulated_together(tmp_path: Path) -> None:
    root = _study(tmp_path / "study")
    cfg = root / "seq_lora" / "seed2" / "config.yaml"
    cfg.write_text(cfg.read_text() + "train:\n  lr: 0.5\n")
    with pytest.raises(ConfigError, match=r"seq_lora/seed2/config.yaml has train.lr=0.5, not 0.0003 "
                                          r"as .*config.yaml: runs of other settings"):
        tabulate(root, progress=False)
    assert not (root / "comparison.csv").exists()
    # the data folder's path and what a resume may change (logging, a0) do not count
    cfg.write_text("seed: 2\nmodel:\n  name: tiny-llama\nmethod:\n  name: seq_lora\n"
                   "  log_history_loss: true\ndata:\n  dir: /elsewhere\nsingle_task_scores: {a: 1.0}\n")
    tabulate(root, progress=False)


# --- damaged run files: a clear error naming the file and field, never a wrong table -----------
def _edit_json(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    for k, v in fields.items():
        if v is ...:
            data.pop(k)
        else:
            data[k] = v
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage, needle", [
    (lambda d: (d / "metrics.json").write_text("[]"), "metrics.json: expected a JSON object, found list"),
    (lambda d: _edit_json(d / "metrics.json", bwt="x"), 'metrics.json: field bwt: expected a number or null, found "x"'),
    (lambda d: _edit_json(d / "metrics.json", op=...), "metrics.json: field op is missing"),
    (lambda d: _edit_json(d / "metrics.json", merges=True), "metrics.json: field merges: expected a whole number"),
    (lambda d: _edit_json(d / "metrics.json", tasks="ab"), "metrics.json: field tasks: expected a non-empty list"),
    (lambda d: _edit_json(d / "metrics.json", accuracy_matrix=[["x"]]), "metrics.json: field accuracy_matrix"),
    (lambda d: (d / "merge_trace.csv").write_bytes(b"\xff\xfe\x00"), "merge_trace.csv: not UTF-8 text"),
    (lambda d: (d / "merge_trace.csv").write_text(""), "merge_trace.csv: empty \\(no header line\\)"),
    (lambda d: (d / "merge_trace.csv").write_text("task,alpha_past\nb,0\n"), "merge_trace.csv: missing column alpha_new, rehearsal_steps"),
    (lambda d: (d / "merge_trace.csv").write_text(
        (d / "merge_trace.csv").read_text() + "b,2,3\n"), "merge_trace.csv, line 7: 3 cells, the header has 13"),
    (lambda d: (d / "merge_trace.csv").write_text(
        "\n".join((d / "merge_trace.csv").read_text().splitlines()[:-1]) + "\n"),
     "merge_trace.csv: 4 merge rows, while .*metrics.json counts 5 merges"),
    (lambda d: (d / "example_scores.csv").write_text(
        (d / "example_scores.csv").read_text().replace(",1\n", ",7\n", 1)), "example_scores.csv: unreadable .*is 7, a score is between 0 and 1"),
])
def test_a_damaged_run_file_is_named_and_nothing_is_written(tmp_path: Path, capsys, damage, needle) -> None:
    root = _study(tmp_path / "study")
    damage(root / "aimmerging" / "seed1")
    with pytest.raises(ConfigError, match=needle):
        tabulate(root, progress=False)
    assert not (root / "comparison.csv").exists()
    assert main(["compare", "--from", str(root), "--quiet"]) == 2       # the CLI: no traceback
    assert "Traceback" not in capsys.readouterr().err
