"""The tables of a comparison over seeds, from its run folders ``DIR/<method>/seed<S>/``.

- ``comparison.csv``: one row per method (:data:`METHOD_COLUMNS`): the mean and sample
  standard deviation over its finished seeds of OP, FWT, BWT and LA (learning accuracy,
  :func:`aimmerging.metrics.learning_accuracy`; percentage points), and its OP, BWT and LA
  difference from the reference method with a 95% interval
  (:func:`aimmerging.stats.paired_bootstrap`, over the seeds where both finished);
- ``comparison_runs.csv``: one row per finished run (:data:`RUN_COLUMNS`): its OP/FWT/BWT/LA,
  the fusion-case counts of its ``merge_trace.csv`` (:func:`aimmerging.stats.fusion_case`),
  merges, rehearsal steps run and skipped (summed over its merges), main optimizer steps and
  training time (:func:`aimmerging.compare.table_row`);
- ``comparison.json``: both tables with the settings and the missing runs;
- ``comparison.md``: the tables in markdown; ``comparison.png``: the figure
  (:func:`aimmerging.plots.comparison.plot_comparison`).

Everything is read from ``metrics.json``, ``merge_trace.csv``, ``example_scores.csv`` and
``config.yaml``, so that the committed copies of those files give the same tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from .compare import SINGLE, _fwt_from, _read_json, table_row
from .compare_report import rows_csv
from .errors import ConfigError
from .io import atomic_write_json, atomic_write_text
from .metrics import learning_accuracy
from .results import EXAMPLE_SCORES, read_example_scores
from .stats import (BOOTSTRAP_DRAWS, BOOTSTRAP_SEED, CLAIM_SEEDS, FUSION_CASES, ExampleScores,
                    decimals, fusion_counts, mean_std, paired_bootstrap, verdict)
from .traces import read_csv_rows

__all__ = ["METHOD_COLUMNS", "RUN_COLUMNS", "run_record", "example_scores_of", "summarize",
           "write_report", "markdown_report"]

#: fusion-case columns of the run table, in :data:`aimmerging.stats.FUSION_CASES`'s order
CASE_COLUMNS = tuple(c.replace("-", "_") for c in FUSION_CASES)
RUN_COLUMNS = ("method", "seed", "OP", "FWT", "BWT", "LA") + CASE_COLUMNS + (
    "merges", "rehearsal_steps_run", "rehearsal_steps_skipped", "main_steps", "train_seconds")
METHOD_COLUMNS = ("method", "seeds", "OP_mean", "OP_std", "FWT_mean", "FWT_std", "BWT_mean",
                  "BWT_std", "LA_mean", "LA_std", "OP_diff", "OP_diff_low", "OP_diff_high",
                  "BWT_diff", "BWT_diff_low", "BWT_diff_high", "LA_diff", "LA_diff_low",
                  "LA_diff_high", "paired_seeds", "train_seconds_mean")
#: the metrics of the tables (FWT has no difference: it needs single_task, not a reference)
METRICS = ("OP", "FWT", "BWT", "LA")
LEVEL = 0.95


def _r(v) -> Optional[float]:
    """A value as the files keep it: unrounded, so that each table rounds it once (a value
    rounded to 4 decimals and then to 2 can differ from the value rounded to 2)."""
    return None if v is None else float(v)


def run_record(run_dir, method: str, seed: int, a0: Optional[dict]) -> dict:
    """One row of ``comparison_runs.csv`` from a finished run folder (raw, unrounded
    OP/FWT/BWT/LA; LA from metrics.json's ``accuracy_matrix``).

    Rehearsal steps are summed over ``merge_trace.csv``'s rows: ``rehearsal_steps`` where
    ``rehearsal_skipped`` is 0 (run) or 1 (skipped, SPEC.md's idle rehearsal). ``main_steps``
    is metrics.json's ``counters.train_steps`` (None for runs that did not count them).
    Raises ConfigError naming the file when the run is not the folder's method or seed, or a
    merge row is malformed.
    """
    run_dir = Path(run_dir)
    m = _read_json(run_dir / "metrics.json")
    for key, want in (("method", method), ("seed", seed)):
        if m.get(key) is not None and m[key] != want:
            raise ConfigError(f"{run_dir / 'metrics.json'}: {key} is {m[key]}, not {want} as its "
                              f"folder says: a run in the wrong folder would be tabulated wrongly")
    trace = run_dir / "merge_trace.csv"
    if not trace.is_file():
        raise ConfigError(f"{trace}: absent, so the run's merges and fusion cases cannot be "
                          f"counted (every run writes one, with a header alone when it merges "
                          f"nothing)")
    rows = read_csv_rows(trace, ("alpha_new", "alpha_past", "rehearsal_steps"))
    if len(rows) != m["merges"]:
        raise ConfigError(f"{trace}: {len(rows)} merge rows, while {run_dir / 'metrics.json'} "
                          f"counts {m['merges']} merges: the two files are not of one run")
    try:
        counts = fusion_counts(rows)
        run = skipped = 0
        for n, r in enumerate(rows, start=1):
            steps, flag = int(r.get("rehearsal_steps") or 0), int(r.get("rehearsal_skipped") or 0)
            if flag not in (0, 1):
                raise ValueError(f"row {n}: rehearsal_skipped is {flag}, expected 0 or 1")
            skipped, run = (skipped + steps, run) if flag else (skipped, run + steps)
    except ValueError as exc:
        raise ConfigError(f"{trace}, {exc}") from None
    counters = m.get("counters") or {}
    return {"method": method, "seed": seed, "OP": m.get("op"), "FWT": _fwt_from(m, a0),
            "BWT": m.get("bwt"), "LA": _learning_accuracy(m, run_dir),
            **dict(zip(CASE_COLUMNS, counts.values())), "merges": len(rows),
            "rehearsal_steps_run": run, "rehearsal_steps_skipped": skipped,
            "main_steps": counters.get("train_steps"),
            "train_seconds": table_row(run_dir, a0)["train_seconds"]}


def _learning_accuracy(metrics: dict, run_dir: Path) -> Optional[float]:
    try:
        return learning_accuracy(metrics.get("accuracy_matrix"))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{run_dir / 'metrics.json'}: accuracy_matrix: {exc}") from None


def example_scores_of(run_dir) -> Optional[ExampleScores]:
    """The run's :class:`~aimmerging.stats.ExampleScores` from ``example_scores.csv`` and
    metrics.json's task order; None when the file is absent. Raises ConfigError naming the
    file when it is malformed or lacks a task's final scores."""
    run_dir = Path(run_dir)
    path = run_dir / EXAMPLE_SCORES
    if not path.is_file():
        return None
    tasks = list(_read_json(run_dir / "metrics.json").get("tasks") or [])
    try:
        scores, ids = read_example_scores(path, with_ids=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from None
    final, diag = [], []
    for i, t in enumerate(tasks):
        after = scores.get(t) or {}
        last = after.get(tasks[-1])
        if not last or any(v is None for v in last):
            raise ConfigError(f"{path}: task {t} lacks its scores after the last stage "
                              f"(column after_{tasks[-1]})")
        final.append(last)
        own = after.get(t)
        diag.append(own if own and all(v is not None for v in own) else None)
    return ExampleScores(tasks, [ids.get(t, []) for t in tasks], final, diag)


def summarize(runs: dict, methods: Sequence[str], seeds: Sequence[int], reference: Optional[str],
              draws: int = BOOTSTRAP_DRAWS, missing: Sequence[dict] = ()) -> dict:
    """The comparison over seeds: ``{"rows", "runs", "missing", "reference", "bootstrap",
    "single_task_scores", "tasks", "seeds", "methods"}`` (values unrounded).

    ``runs``: ``{method: {seed: finished run folder}}`` (``single_task`` gives each seed's a0).
    Every finished run counts for the means; the difference from ``reference`` and its
    interval use the seeds where both runs finished and wrote ``example_scores.csv``.
    """
    single = runs.get(SINGLE, {})
    a0s = {s: _read_json(Path(single[s]) / "metrics.json").get("single_task_scores")
           for s in seeds if s in single}
    records = {m: {s: run_record(runs[m][s], m, s, a0s.get(s)) for s in seeds if s in runs.get(m, {})}
               for m in methods}
    scores = {m: {s: example_scores_of(runs[m][s]) for s in recs} for m, recs in records.items()}
    missing = list(missing)
    for m, by_seed in scores.items():
        missing += [{"method": m, "seed": s, "why": f"no {EXAMPLE_SCORES}: left out of the "
                     f"intervals"} for s, v in by_seed.items() if v is None]
    rows = []
    for m in methods:
        recs = records[m]
        row: dict = {"method": m, "seeds": len(recs)}
        for col in METRICS:
            mean, std = mean_std(r[col] for r in recs.values())
            row[f"{col}_mean"], row[f"{col}_std"] = _r(mean), _r(std)
        row["train_seconds_mean"] = _r(mean_std(r["train_seconds"] for r in recs.values())[0])
        if reference is not None and m != reference and reference in records:
            row.update(_difference(m, reference, records, scores, runs, draws))
        rows.append({c: row.get(c) for c in METHOD_COLUMNS})
    tasks = next((list(_read_json(Path(p) / "metrics.json").get("tasks") or [])
                  for m in methods for p in runs.get(m, {}).values()), [])
    return {"seeds": list(seeds), "methods": list(methods), "reference": reference,
            "tasks": tasks, "bootstrap": {"draws": draws, "seed": BOOTSTRAP_SEED, "level": LEVEL},
            "single_task_scores": {str(s): v for s, v in a0s.items()}, "rows": rows,
            "runs": [{k: (_r(v) if k in METRICS else v) for k, v in r.items()}
                     for m in methods for r in records[m].values()],
            "missing": missing}


def _difference(m: str, ref: str, records: dict, scores: dict, runs: dict, draws: int) -> dict:
    paired = [s for s in records[m] if s in records[ref]
              and scores[m][s] is not None and scores[ref][s] is not None]
    out: dict = {"paired_seeds": len(paired)}
    if not paired:
        return out
    try:
        interval = paired_bootstrap([(scores[m][s], scores[ref][s]) for s in paired], draws,
                                    BOOTSTRAP_SEED, LEVEL)
    except ValueError as exc:
        text = str(exc)
        if text.startswith("seed pair "):
            n = int(text.split()[2].rstrip(":")) - 1
            s = paired[n]
            text = (f"{Path(runs[m][s]) / EXAMPLE_SCORES} and {Path(runs[ref][s]) / EXAMPLE_SCORES}"
                    f": {text.split(':', 1)[1].strip()}")
        raise ConfigError(text) from None
    for col in ("OP", "BWT", "LA"):
        pairs = [(records[m][s][col], records[ref][s][col]) for s in paired]
        if interval[col] is None or any(a is None or b is None for a, b in pairs):
            continue
        out[f"{col}_diff"] = _r(sum(a - b for a, b in pairs) / len(pairs))
        out[f"{col}_diff_low"], out[f"{col}_diff_high"] = map(_r, interval[col])
    return out


# --- files ------------------------------------------------------------------------------------
def write_report(directory, summary: dict, meta: dict) -> list[Path]:
    """Write comparison.csv, comparison_runs.csv, comparison.json, comparison.md and
    comparison.png into ``directory`` (atomically); returns their paths."""
    from .plots.comparison import plot_comparison

    d = Path(directory)
    data = {**meta, **summary}
    paths = [atomic_write_text(d / "comparison.csv", rows_csv(summary["rows"], METHOD_COLUMNS)),
             atomic_write_text(d / "comparison_runs.csv", rows_csv(summary["runs"], RUN_COLUMNS)),
             atomic_write_json(d / "comparison.json", data)]
    figure = plot_comparison(summary, d / "comparison.png")
    paths.append(atomic_write_text(d / "comparison.md", markdown_report(data, figure is not None)))
    return paths + ([figure] if figure is not None else [])


def _pm(mean, std) -> str:
    if mean is None:
        return "-"
    return decimals(mean, 2) + (f" ± {decimals(std, 2)}" if std is not None else "")


def _diff_cell(row: dict, col: str, seeds: int) -> str:
    """A difference cell of ``comparison.md``: the difference and its interval, in bold when it
    is a claim (:func:`aimmerging.stats.verdict`), else followed by why it is not one."""
    d = row.get(f"{col}_diff")
    if d is None:
        return "-"
    low, high = row[f"{col}_diff_low"], row[f"{col}_diff_high"]
    text = f"{decimals(d, 2, True)} [{decimals(low, 2, True)}, {decimals(high, 2, True)}]"
    if row.get("paired_seeds") != seeds:
        n = row.get("paired_seeds")
        text += f" (over {n} seed{'' if n == 1 else 's'})"
    said = verdict(row, col)
    if said == "few":
        return f"{text}; too few seeds for a claim (fewer than {CLAIM_SEEDS})"
    return f"{text}; no measurable difference" if said == "none" else f"**{text}**"


def markdown_report(data: dict, figure: bool = True) -> str:
    """``comparison.md``: the method table, the missing runs and the run table (fusion cases)."""
    ref, boot, tasks = data.get("reference"), data.get("bootstrap") or {}, data.get("tasks") or []
    over = data.get("overrides") or []
    source = (f"- recomputed from the run folders in `{data['from']}` (no run was made): "
              f"`{data['command']}`; settings: each run's `config.yaml` (the same but for the "
              f"seed and method)" if data.get("from") else
              f"- config file: `{data.get('config', '?')}`" + (f" with `--set {' '.join(over)}`" if over else ""))
    lines = [f"# Continual-learning comparison over seeds: {data.get('title', '?')}", "", source,
             f"- seeds: {', '.join(map(str, data.get('seeds') or []))}; model: {data.get('model', '?')}",
             f"- {len(tasks)} tasks, in this order: {', '.join(tasks) if tasks else '?'}",
             f"- reference method: {ref or 'none'}; intervals: {100 * boot.get('level', LEVEL):.0f}%, "
             f"{boot.get('draws')} bootstrap draws, bootstrap seed {boot.get('seed')}", ""]
    missing = data.get("missing") or []
    if missing:
        lines += ["Missing runs (means and intervals are over the seeds present):", ""]
        lines += [f"- {x['method']} seed {x['seed']}: {x['why']}" for x in missing] + [""]
    else:
        lines += ["Every run of every method at every seed is present.", ""]
    lines += [f"| Method | Seeds | OP ↑ | FWT ↑ | BWT ↑ | LA ↑ | OP − {ref} [95% interval] | "
              f"BWT − {ref} [95% interval] | LA − {ref} [95% interval] | Training time (s) |",
              "|---|---:|" + "---:|" * 8]
    n_seeds = len(data.get("seeds") or [])
    for r in data["rows"]:
        is_ref = r["method"] == ref
        t = r.get("train_seconds_mean")
        lines.append(f"| {r['method']} | {r['seeds']} | {_pm(r['OP_mean'], r['OP_std'])} | "
                     f"{_pm(r['FWT_mean'], r['FWT_std'])} | {_pm(r['BWT_mean'], r['BWT_std'])} | "
                     f"{_pm(r['LA_mean'], r['LA_std'])} | "
                     + "".join(f"{'(reference)' if is_ref else _diff_cell(r, c, n_seeds)} | "
                               for c in ("OP", "BWT", "LA")) +
                     f"{'-' if t is None else f'{t:.1f}'} |")
    lines += ["", "OP, FWT and BWT (docs/algorithm.md, \"Metrics\"; percentage points) and LA, the "
              "learning accuracy (the mean over tasks of each task's score right after its own "
              "training: plasticity, where BWT is retention; OP = LA + BWT (K - 1) / K), are the "
              "mean ± the sample standard deviation over the seeds present; FWT of seed S uses the "
              "`single_task` run of seed S as a0. A difference is the method minus the reference, "
              "averaged over the seeds where both finished, with its 95% interval from a paired "
              "hierarchical bootstrap: seeds drawn with replacement, then each task's test examples "
              "drawn with replacement, the same examples for both methods (see `docs/comparing.md`). "
              "It covers the variation from the training seed and from the test sample, not other "
              "task orders, models or settings. A difference is in bold, a claim that one method is "
              f"above or below the other, when its interval excludes 0 over at least "
              f"{CLAIM_SEEDS} paired seeds; over fewer it is marked \"too few seeds for a "
              f"claim\", whatever its interval, and one whose interval holds 0 is marked \"no "
              f"measurable difference\".", ""]
    if figure:
        lines += ["![OP and BWT per method](comparison.png)", ""]
    lines += ["## Runs", "", "| Method | Seed | OP | FWT | BWT | LA | No-op | Tie | Discard | Mixed | "
              "Merges | Rehearsal steps run | Rehearsal steps skipped | Main steps | Training time (s) |",
              "|---|---:|" + "---:|" * 13]
    num = lambda v: "-" if v is None else decimals(v, 2)   # noqa: E731
    for r in data["runs"]:
        cells = [r["method"], r["seed"], num(r["OP"]), num(r["FWT"]), num(r["BWT"]), num(r["LA"])]
        cells += [r[c] for c in CASE_COLUMNS] + [r["merges"], r["rehearsal_steps_run"],
                                                 r["rehearsal_steps_skipped"]]
        cells += ["-" if r["main_steps"] is None else r["main_steps"], f"{r['train_seconds']:.1f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Fusion cases (docs/algorithm.md, \"The fusion cases\"), counted from each run's "
              "`merge_trace.csv` by (alpha_new, alpha_past): no-op (1, 0), the merge changes "
              "nothing; tie (0.5, 0.5), from P_new = P_past = 0; discard (0, 1), the new-task "
              "progress since the anchor is replaced by the rehearsal; mixed, any other pair. "
              "Rehearsal steps are summed over the merges (skipped: those of merges with "
              "alpha_past = 0, whose rehearsal would be discarded, `method.skip_idle_rehearsal`). Main steps are the optimizer steps "
              "on the tasks' training data (`replay` mixes the replay memory into it, so it takes more). Training time is the training loops' wall time in seconds "
              "(monitoring, rehearsal and merges included), less the history-loss logging of the "
              "methods that do not use it; evaluation is not in it (metrics.json's `timing_seconds` "
              "has both). Times depend on the machine and its load.", ""]
    return "\n".join(lines)
