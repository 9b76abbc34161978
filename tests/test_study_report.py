"""The study's summaries (aimmerging.study_report): the markers, the verdicts, the missing
runs, and the committed study recomputed from its run files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aimmerging import study_report
from aimmerging.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _row(method, op_diff=None, low=None, high=None, seeds=3):
    row = {"method": method, "seeds": seeds, "OP_mean": 60.0, "OP_std": 1.0, "FWT_mean": -1.0,
           "FWT_std": 0.5, "BWT_mean": -5.0, "BWT_std": 2.0, "OP_diff": op_diff,
           "OP_diff_low": low, "OP_diff_high": high, "BWT_diff": None}
    return row


def _data(rows, missing=(), paired=3):
    for r in rows:
        r.setdefault("paired_seeds", paired)
    return {"seeds": [42, 43, 44], "reference": "replay", "rows": rows, "runs": [],
            "missing": list(missing), "settings": {"split": "test", "n_test": 250}}


def test_the_markers_bound_what_is_replaced():
    page = "intro\n<!-- begin generated: results (aimmerging docs) -->\nold\n<!-- end generated: results -->\nafter\n"
    new = study_report.replace_block(page, "results", "new table")
    assert new == page.replace("old", "new table")
    assert study_report.replace_block(new, "results", "new table") == new
    with pytest.raises(ConfigError, match="README.md: no block"):
        study_report.replace_block("no markers here", "results", "x", where="README.md")


def test_verdicts_follow_the_intervals():
    text = study_report.results_details(_data([
        _row("replay"), _row("aimmerging", 1.5, 0.2, 2.8), _row("seq_lora", -9.0, -11.0, -7.0),
        _row("fixed_interval", 0.4, -1.0, 1.8)]))
    assert "**+1.5 [+0.2, +2.8]**" in text                       # excludes 0: bold
    assert "+0.4 [-1.0, +1.8]" in text and "**+0.4" not in text
    assert "- OP: above `replay`: `aimmerging`; below `replay`: `seq_lora`; no measurable " \
           "difference from `replay`: `fixed_interval`." in text
    assert "not complete" not in text
    readme = study_report.readme_summary(_data([_row("replay"), _row("fixed_interval", 0.4, -1.0, 1.8)]))
    assert "The test split, 250 examples per task" in readme and "runs are in" not in readme
    assert "BWT, the mean change of the earlier tasks" in readme     # the metrics, defined
    assert ("- `fixed_interval` against `replay` (3 paired seeds): OP +0.4 [-1.0, +1.8]: no "
            "measurable difference overall.") in readme


def test_no_claim_from_fewer_than_three_seeds():
    text = study_report.readme_summary(_data([_row("replay"), _row("aimmerging", 1.5, 0.2, 2.8)],
                                             paired=1))
    assert "+1.5 [+0.2, +2.8]" in text                           # the interval excludes 0 ...
    assert "**+1.5" not in text                                   # ... but is not bold
    assert "Too few paired seeds for a claim yet (fewer than 3): `aimmerging` (1)" in text
    assert "against `replay`" not in text                         # ... and one seed claims nothing
    claimed = study_report.readme_summary(_data([_row("replay"), _row("aimmerging", 1.5, 0.2, 2.8)],
                                                paired=3))
    assert "**+1.5 [+0.2, +2.8]**" in claimed


def test_la_and_bwt_say_why_over_enough_seeds():
    lower_la = _row("aimmerging", -1.7, -3.8, 0.5)
    lower_la.update(LA_mean=60.8, LA_std=0.8, LA_diff=-2.0, LA_diff_low=-3.2, LA_diff_high=-0.8,
                    BWT_diff=3.0, BWT_diff_low=1.0, BWT_diff_high=5.0)
    ref = _row("replay")
    ref.update(LA_mean=62.8, LA_std=0.8)
    text = study_report.readme_summary(_data([ref, lower_la]))
    assert ("- `aimmerging` against `replay` (3 paired seeds): LA **-2.0 [-3.2, -0.8]**: learns "
            "each new task less well; BWT **+3.0 [+1.0, +5.0]**: keeps more of the earlier "
            "tasks; OP -1.7 [-3.8, +0.5]: no measurable difference overall.") in text
    # with the runs, each seed's own difference stands beside a claim, and whether all agree
    cases = dict(merges=0, no_op=0, tie=0, discard=0, mixed=0)
    runs = [{"method": m, "seed": seed, "LA": la, "BWT": bwt, "OP": 60.0, **cases}
            for seed, (a_la, r_la, a_bwt) in {42: (60.0, 62.5, -1.0), 43: (61.0, 62.0, -2.0),
                                                44: (61.4, 63.9, -3.0)}.items()
            for m, la, bwt in (("aimmerging", a_la, a_bwt), ("replay", r_la, -4.0))]
    with_runs = {**_data([ref, lower_la]), "runs": runs}
    text = study_report.readme_summary(with_runs)
    assert "LA **-2.0 [-3.2, -0.8]**, every seed below (-2.5, -1.0, -2.5): learns" in text
    assert "BWT **+3.0 [+1.0, +5.0]**, every seed above (+3.0, +2.0, +1.0): keeps" in text
    runs[0]["LA"] = 63.0                                         # seed 42 now above replay
    assert "LA **-2.0 [-3.2, -0.8]**, not every seed below (+0.5, -1.0, -2.5)" in \
        study_report.readme_summary(with_runs)
    assert "OP -1.7 [-3.8, +0.5]: no measurable" in text          # no claim: no seeds listed
    details = study_report.results_details(_data([ref, lower_la]))
    assert "| `aimmerging` | 3 | 60.8 ± 0.8 | **-2.0 [-3.2, -0.8]** |" in details
    assert "- LA: below `replay`: `aimmerging`." in details
    # over two paired seeds the same intervals explain nothing yet
    for r in (ref, lower_la):
        r["paired_seeds"] = 2
    assert "against `replay`" not in study_report.readme_summary(_data([ref, lower_la]))


def test_the_readme_counts_the_fusion_cases_per_run():
    data = _data([_row("replay"), _row("aimmerging")])
    run = {"method": "aimmerging", "merges": 12, "no_op": 2, "tie": 9, "discard": 0, "mixed": 1,
           "rehearsal_steps_run": 80, "main_steps": 300}
    data["runs"] = [dict(run, seed=42), dict(run, seed=43, no_op=1, tie=10),
                    {"method": "replay", "seed": 42, "merges": 0, "no_op": 0, "tie": 0,
                     "discard": 0, "mixed": 0, "rehearsal_steps_run": 0, "main_steps": 348}]
    text = study_report.readme_summary(data)
    assert ("Fusion cases, mean per run (docs/results.md explains them): `aimmerging` 12.0 merges "
            "(1.5 no-op, 9.5 tie, 0.0 discard, 1.0 mixed).") in text


def test_missing_runs_are_named():
    text = study_report.readme_summary(_data(
        [_row("replay", seeds=1)], [{"method": "aimmerging", "seed": 43, "why": "absent"},
                                    {"method": "aimmerging", "seed": 44, "why": "not finished"}]))
    assert "0 of 2 runs are in, and the means and intervals are over the seeds present" in text
    details = study_report.results_details(_data(
        [_row("replay", seeds=1)], [{"method": "aimmerging", "seed": 43, "why": "absent"},
                                    {"method": "aimmerging", "seed": 44, "why": "not finished"}]))
    assert "`aimmerging` seed 43, 44" in details


def test_no_study_says_so():
    assert "No run of the study has been committed yet" in study_report.readme_summary(None)
    assert study_report.load_study(ROOT / "no_such_folder") is None


def test_an_unreadable_comparison_names_its_file(tmp_path):
    (tmp_path / "comparison.json").write_text("{not json")
    with pytest.raises(ConfigError, match="comparison.json: unreadable"):
        study_report.load_study(tmp_path)


COMMITTED = ROOT / study_report.STUDY


@pytest.mark.skipif(not (COMMITTED / "comparison.json").is_file(), reason="no committed study")
def test_the_committed_comparison_is_recomputed_from_its_run_files(tmp_path):
    """Every number of the committed comparison comes back from the committed run files
    (the fusion cases from each merge_trace.csv, the intervals from example_scores.csv)."""
    from aimmerging.multiseed import tabulate

    committed = json.loads((COMMITTED / "comparison.json").read_text())
    tabulate(COMMITTED, committed["methods"], committed["seeds"], committed["reference"],
             output=tmp_path, progress=False)
    again = json.loads((tmp_path / "comparison.json").read_text())
    for key in ("rows", "runs", "missing", "seeds", "methods", "single_task_scores"):
        assert again[key] == committed[key], key
    for name in ("comparison.csv", "comparison_runs.csv"):
        assert (tmp_path / name).read_text() == (COMMITTED / name).read_text(), name


def test_the_committed_study_against_fixed_interval_pairs_the_runs_by_seed():
    """The table against fixed_interval: fixed_interval is its reference, and each point
    difference is the mean over the paired seeds of the runs' own OP, BWT and LA differences
    (comparison_runs.csv), LA being the mean of the accuracy matrix's diagonal."""
    data = study_report.load_study(COMMITTED)
    base = data["against_base"]
    runs = {(r["method"], r["seed"]): r for r in data["runs"]}
    if base is None:
        assert ("fixed_interval" not in {m for m, _ in runs}
                or not {m for m, _ in runs} & {"aimmerging", "aimmerging_reference"})
        return
    assert base["reference"] == "fixed_interval"
    for row in base["rows"]:
        if row["method"] == "fixed_interval" or not row["paired_seeds"]:
            continue
        seeds = [s for (m, s) in runs if m == row["method"] and ("fixed_interval", s) in runs]
        assert row["paired_seeds"] == len(seeds)
        for col in ("OP", "BWT", "LA"):
            want = sum(runs[(row["method"], s)][col] - runs[("fixed_interval", s)][col]
                       for s in seeds) / len(seeds)
            assert row[f"{col}_diff"] == pytest.approx(want, abs=1e-3), (row["method"], col)
            assert row[f"{col}_diff_low"] <= row[f"{col}_diff"] <= row[f"{col}_diff_high"]
    for (m, s), r in runs.items():
        matrix = json.loads((COMMITTED / m / f"seed{s}" / "metrics.json").read_text())["accuracy_matrix"]
        assert r["LA"] == pytest.approx(sum(matrix[i][i] for i in range(len(matrix))) / len(matrix),
                                        abs=1e-3)


def test_threshold_peaks_take_each_intervals_highest_loss(tmp_path):
    path = tmp_path / "signals.csv"
    rows = ["task,stage,step,train_loss,history_loss,threshold,interval,lr",
            "a,2,1,1,0.4,,8,0", "a,2,2,1,0.5,1.0,8,0", "a,2,3,1,0.7,1.0,8,0",   # interval 1
            "a,2,4,1,0.9,,8,0", "a,2,5,1,2.5,2.0,8,0", "a,2,6,1,1.0,2.0,8,0",   # interval 2 fires
            "b,3,1,1,0.3,,8,0", "b,3,2,1,0.2,2.0,8,0"]                          # next stage
    path.write_text("\n".join(rows) + "\n")
    assert study_report.threshold_peaks(path) == pytest.approx([0.7, 1.25, 0.1])
    assert study_report.threshold_peaks(tmp_path / "absent.csv") == []
    path.write_text(rows[0] + "\na,2,1,1,x,1.0,8,0\n")
    with pytest.raises(ConfigError, match="signals.csv, row 1: history_loss"):
        study_report.threshold_peaks(path)


def test_lambda_falls_are_counted_within_a_task(tmp_path):
    from aimmerging.study_merges import trace_counts as _trace_counts

    path = tmp_path / "merge_trace.csv"
    path.write_text("task,stage,step,lambda,activations,alpha_new,alpha_past\n"
                    "a,2,8,5.0,0,1,0\na,2,16,4.0,2,0.4,0.6\na,2,24,4.5,0,0.5,0.5\n"
                    "b,3,8,9.0,0,1,0\nb,3,16,3.0,1,0,1\n")
    # a: 5 -> 4 fell, 4 -> 4.5 rose; b: 9 -> 3 fell; a -> b is no pair
    assert _trace_counts(path) == (2, (2, 3))
    for bad in ("x,0", "1.0,nan"):
        path.write_text(f"task,stage,step,lambda,activations\na,2,8,{bad}\n")
        with pytest.raises(ConfigError, match="merge_trace.csv, row 1: .* not a finite number"):
            _trace_counts(path)


def test_comparison_md_marks_an_interval_over_too_few_seeds():
    from aimmerging.multiseed_report import _diff_cell

    row = {"OP_diff": 3.9, "OP_diff_low": 0.7, "OP_diff_high": 7.1, "paired_seeds": 1}
    # over 1 seed no claim, whether or not the interval excludes 0: no bold
    assert _diff_cell(row, "OP", 3) == ("+3.90 [+0.70, +7.10] (over 1 seed); too few seeds "
                                        "for a claim (fewer than 3)")
    assert _diff_cell({**row, "OP_diff_low": -0.5}, "OP", 3).endswith("; too few seeds for a "
                                                                       "claim (fewer than 3)")
    assert _diff_cell({**row, "paired_seeds": 3}, "OP", 3) == "**+3.90 [+0.70, +7.10]**"
    assert _diff_cell({**row, "OP_diff_low": -0.5, "paired_seeds": 3}, "OP", 3) == \
        "+3.90 [-0.50, +7.10]; no measurable difference"


@pytest.mark.parametrize("bad, field", [({"rows": [], "runs": 5}, "runs is not a list"),
                                        ({"rows": [{"seeds": 1}], "runs": []}, "rows\\[0\\]"),
                                        ({"rows": None, "runs": []}, "rows is not a list"),
                                        ({"rows": [], "runs": [{"method": "x"}]}, "runs\\[0\\]")])
def test_a_malformed_comparison_names_its_field(tmp_path, bad, field):
    (tmp_path / "comparison.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=f"comparison.json: {field}"):
        study_report.load_study(tmp_path)


def test_a_run_without_its_merge_trace_is_refused(tmp_path):
    from aimmerging.multiseed_report import run_record
    from aimmerging.study_merges import trace_counts as _trace_counts

    (tmp_path / "metrics.json").write_text(json.dumps({"method": "replay", "seed": 1, "op": 1.0,
                                                        "bwt": None, "merges": 0, "tasks": ["a"]}))
    with pytest.raises(ConfigError, match="merge_trace.csv: absent"):
        run_record(tmp_path, "replay", 1, None)
    with pytest.raises(ConfigError, match="merge_trace.csv: absent"):
        _trace_counts(tmp_path / "merge_trace.csv")


def test_collect_refuses_a_folder_inside_the_source(tmp_path):
    from aimmerging.multiseed import collect_results

    with pytest.raises(ConfigError, match="inside the --from folder"):
        collect_results(tmp_path, tmp_path / "replay", progress=False)


def test_a_folder_of_no_method_is_named(tmp_path):
    from aimmerging.multiseed import tabulate

    (tmp_path / "aimmergin" / "seed42").mkdir(parents=True)
    (tmp_path / "aimmergin" / "seed42" / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="a folder is named after no method .*aimmergin"):
        tabulate(tmp_path, progress=False)


def test_run_time_reads_the_timing_and_the_machine():
    metrics = {"timing_seconds": {"train_seconds": 3600.0, "eval_seconds": 600.0},
               "machine": {"cpu": "EPYC", "cpu_flags": {"avx2": True, "avx512f": True}}}
    assert study_report.run_time(metrics) == {"train": 3600.0, "eval": 600.0,
                                              "cpu": "EPYC with AVX512"}
    metrics["machine"]["cpu_kernels"] = "AVX2"            # what the run recorded wins
    assert study_report.run_time(metrics)["cpu"] == "EPYC, AVX2 kernels"
    assert study_report.run_time({}) == {"train": None, "eval": None, "cpu": "unknown"}


def test_the_time_table_gives_each_methods_mean_and_range_in_minutes():
    data = _data([_row("replay"), _row("aimmerging")])
    data["timing"] = {"aimmerging": {42: {"train": 3600.0, "eval": 600.0, "cpu": "A"},
                                     43: {"train": 7200.0, "eval": 1200.0, "cpu": "B"}},
                      "single_task": {42: {"train": 1200.0, "eval": None, "cpu": "A"}}}
    table = study_report._time_table(data)
    assert table[2] == "| `aimmerging` | 2 | 90; 60–120 | 15 | A; B |"
    assert table[3] == "| `single_task` | 1 | 20; 20–20 | - | A |"
    assert len(table) == 4                    # replay has no timing: no row
    assert study_report._time_table(_data([_row("replay")])) == []


def test_the_count_of_runs_in_includes_single_task():
    data = _data([_row("replay", seeds=1)], missing=[{"method": "replay", "seed": 43}])
    data["runs"], data["single_task_scores"] = [{"method": "replay", "seed": 42}], {"42": {}}
    assert "2 of 3 runs are in" in study_report._missing(data)[0]
