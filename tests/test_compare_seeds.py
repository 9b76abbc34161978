"""`aimmerging compare --seeds` on the smoke config (tiny-llama, shrunk as runhelp.SMALL):
the seed layout, the study script's runs reused, the tables, and ``--from`` recomputing them."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from runhelp import SMALL, SMOKE, needs_data

from aimmerging.cli import main
from aimmerging.errors import ConfigError
from aimmerging.multiseed import compare_seeds
from aimmerging.multiseed_report import METHOD_COLUMNS
from aimmerging.stats import FUSION_CASES, fusion_case
from aimmerging.traces import read_csv_rows

METHODS = ["seq_lora", "replay", "aimmerging"]
SEEDS = [42, 43]


@pytest.fixture(scope="module")
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, one_thread) -> Path:
    from runhelp import DATA

    if not (DATA / "train").is_dir():
        pytest.skip(f"{DATA} is absent")
    from aimmerging.config import load_config
    from aimmerging.runner import run

    out = tmp_path_factory.mktemp("seeds") / "out"
    # a run as scripts/cpu_small_study.sh makes it: aimmerging run --set seed=S method.name=M
    # method.log_history_loss=true --output OUT/M/seedS
    study = out / "replay" / "seed43"
    run(load_config(SMOKE, SMALL + ["seed=43", "method.name=replay", "method.log_history_loss=true"]),
        study, resume=False, overwrite=False, progress=False)
    code = main(["compare", str(SMOKE), "--methods", ",".join(METHODS), "--seeds", "42,43",
                 "--bootstrap", "300", "--quiet", "--set", *SMALL, "--output", str(out)])
    assert code == 0
    return out


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _stamps(out: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in out.glob("*/seed*/metrics.json")}


@needs_data
def test_every_method_runs_once_per_seed_in_its_folder(seeded: Path) -> None:
    for m in METHODS + ["single_task"]:
        for s in SEEDS:
            metrics = json.loads((seeded / m / f"seed{s}" / "metrics.json").read_text())
            assert metrics["seed"] == s and metrics["method"] == m
    assert not (seeded / "replay" / "metrics.json").exists()
    # the study script's run was reused: it has no a0 in its config, the others do
    assert json.loads((seeded / "replay" / "seed43" / "metrics.json").read_text())["fwt"] is None
    assert json.loads((seeded / "replay" / "seed42" / "metrics.json").read_text())["fwt"] is not None


@needs_data
def test_the_table_has_mean_std_and_interval_columns(seeded: Path) -> None:
    rows = {r["method"]: r for r in _csv(seeded / "comparison.csv")}
    assert list(rows) == METHODS and list(rows["replay"]) == list(METHOD_COLUMNS)
    for m, r in rows.items():
        assert r["seeds"] == "2"
        for col in ("OP", "FWT", "BWT"):
            assert math.isfinite(float(r[f"{col}_mean"])) and float(r[f"{col}_std"]) >= 0, (m, col)
    for m in ("seq_lora", "aimmerging"):
        r = rows[m]
        assert r["paired_seeds"] == "2"
        for col in ("OP", "BWT"):
            assert float(r[f"{col}_diff_low"]) <= float(r[f"{col}_diff_high"]), (m, col)
    md = (seeded / "comparison.md").read_text()
    assert "OP − replay [95% interval]" in md and "| replay | 2 |" in md
    assert "Every run of every method at every seed is present" in md
    assert (seeded / "comparison.png").is_file()


@needs_data
def test_each_runs_numbers_come_from_its_files(seeded: Path) -> None:
    from aimmerging.results import read_example_scores

    runs = {(r["method"], int(r["seed"])): r for r in _csv(seeded / "comparison_runs.csv")}
    assert set(runs) == {(m, s) for m in METHODS for s in SEEDS}
    for (m, s), r in runs.items():
        folder = seeded / m / f"seed{s}"
        trace = read_csv_rows(folder / "merge_trace.csv")
        cases = [fusion_case(t["alpha_new"], t["alpha_past"]) for t in trace]
        assert [int(r[c.replace("-", "_")]) for c in FUSION_CASES] == [cases.count(c) for c in FUSION_CASES]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert int(r["merges"]) == len(trace) == metrics["merges"]
        assert int(r["rehearsal_steps_run"]) == metrics["counters"].get("rehearsal_steps", 0)
        assert int(r["main_steps"]) == metrics["counters"]["train_steps"]
        assert float(r["OP"]) == metrics["op"]                 # unrounded: tables round once
        # example_scores.csv holds the matrix's cells per example
        scores = read_example_scores(folder / "example_scores.csv")
        for i, t in enumerate(metrics["tasks"]):
            for j, after in enumerate(metrics["tasks"]):
                cell, vals = metrics["accuracy_matrix"][i][j], scores[t][after]
                if cell is not None:
                    assert 100 * sum(vals) / len(vals) == pytest.approx(cell, abs=1e-6)
    assert int(runs[("aimmerging", 42)]["merges"]) > 0


@needs_data
def test_from_recomputes_what_compare_wrote(seeded: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert main(["compare", "--from", str(seeded), "--bootstrap", "300", "--output", str(again),
                 "--quiet"]) == 0
    for name in ("comparison.csv", "comparison_runs.csv"):
        assert (again / name).read_text() == (seeded / name).read_text(), name
    a, b = (json.loads((d / "comparison.json").read_text()) for d in (again, seeded))
    for key in ("rows", "runs", "missing", "seeds", "tasks", "single_task_scores", "bootstrap"):
        assert a[key] == b[key], key


@needs_data
def test_a_second_call_reuses_and_resumes(seeded: Path, one_thread) -> None:
    before = _stamps(seeded)
    (seeded / "seq_lora" / "seed42" / "metrics.json").unlink()       # its checkpoint remains
    summary = compare_seeds(SMOKE, METHODS, SEEDS, SMALL, seeded, draws=300, progress=False)
    after = _stamps(seeded)
    assert {p: t for p, t in after.items() if "seq_lora/seed42" not in str(p)} == \
        {p: t for p, t in before.items() if "seq_lora/seed42" not in str(p)}
    assert (seeded / "seq_lora" / "seed42" / "metrics.json").is_file()
    assert summary["missing"] == []


@needs_data
def test_refusals_come_before_any_training(seeded: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train.epochs=2, not 1 as asked"):
        compare_seeds(SMOKE, METHODS, SEEDS, SMALL + ["train.epochs=1"], seeded, progress=False)
    with pytest.raises(ConfigError, match="--seeds gives each run's seed"):
        compare_seeds(SMOKE, METHODS, SEEDS, SMALL + ["seed=3"], tmp_path / "o", progress=False)
    one = tmp_path / "one"
    (one / "replay").mkdir(parents=True)
    (one / "replay" / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds a one-seed run"):
        compare_seeds(SMOKE, ["seq_lora", "replay"], [1], SMALL, one, progress=False)
    assert sorted(p.name for p in one.iterdir()) == ["replay"]


@needs_data
def test_the_summaries_are_written_from_a_collected_study(seeded: Path, tmp_path: Path) -> None:
    """--collect into a checkout's docs/results/cpu_small, then `aimmerging docs`'s blocks:
    every method's row in README.md, the fusion cases in docs/results.md, and --check stale
    once the committed comparison changes."""
    from aimmerging.docgen import write_blocks
    from aimmerging.study_report import STUDY

    dest = tmp_path / STUDY
    assert main(["compare", "--from", str(seeded), "--collect", str(dest), "--bootstrap", "300",
                 "--quiet"]) == 0
    markers = "<!-- begin generated: results (aimmerging docs) -->\n<!-- end generated: results -->\n"
    (tmp_path / "docs").mkdir(exist_ok=True)
    for page in ("README.md", "docs/results.md"):
        (tmp_path / page).write_text("# page\n\n" + markers)
    assert sorted(write_blocks(tmp_path)) == ["README.md", "docs/results.md"]
    assert write_blocks(tmp_path, check=True) == []
    readme = (tmp_path / "README.md").read_text()
    for m in METHODS:
        assert f"| `{m}` | 2 |" in readme
    runs = {(r["method"], int(r["seed"])): r for r in _csv(dest / "comparison_runs.csv")}
    merges = sum(int(runs[("aimmerging", s)]["merges"]) for s in SEEDS) / len(SEEDS)
    details = (tmp_path / "docs/results.md").read_text()
    assert f"| `aimmerging` | 2 | {merges:.1f} |" in details
    assert f"- `aimmerging` (2 runs): an activation was counted in " in details
    data = json.loads((dest / "comparison.json").read_text())
    data["rows"][0]["OP_mean"] = 99.0
    (dest / "comparison.json").write_text(json.dumps(data))
    assert sorted(write_blocks(tmp_path, check=True)) == ["README.md", "docs/results.md"]
