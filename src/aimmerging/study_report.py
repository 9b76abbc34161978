"""The study's summaries in README.md and docs/results.md, generated from a committed
comparison over seeds (``comparison.json`` and the run folders beside it, as
``aimmerging compare --from DIR --collect DEST`` writes them).

The pages hold each summary between two markers::

    <!-- begin generated: NAME (aimmerging docs) -->
    ...
    <!-- end generated: NAME -->

and ``aimmerging docs`` rewrites what is between them (:func:`replace_block`); ``aimmerging
docs --check`` and ``tests/test_docs.py`` fail when a page no longer matches the committed
files, so that no number in those pages is typed in by hand.

- :func:`readme_summary`: the method table (mean ± std over seeds of OP, BWT, FWT, and the
  OP and BWT difference from the reference with its 95% interval), which differences are
  real, and the runs still missing;
- :func:`results_details`: the same table with FWT, and LA (learning accuracy: plasticity,
  where BWT is retention) with its difference from the reference; the fusion cases per method
  (SPEC.md "Fusion cases"), the forgetting signal's activations and how close the history
  loss came to its threshold (:func:`threshold_peaks`), the rehearsal, and each task's
  score right after its training and after the last task, per method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .errors import ConfigError
from .stats import CLAIM_SEEDS, decimals, mean_std, verdict
from .study_learning import BASE, against_base, base_table, la_table, tradeoff_sentences
from .study_learning import _diff, _pm
from .study_merges import fusion_table, merge_sentences, merge_summary, threshold_peaks, trace_counts

__all__ = ["STUDY", "replace_block", "load_study", "run_time", "against_base", "BASE", "readme_summary", "results_details", "threshold_peaks",
           "blocks"]

#: the committed study that the pages summarize, relative to the checkout's root
STUDY = Path("docs/results/cpu_small")
_BEGIN = "<!-- begin generated: {name} (aimmerging docs) -->"
_END = "<!-- end generated: {name} -->"


def replace_block(text: str, name: str, body: str, where: str = "page") -> str:
    """``text`` with the lines between the markers of block ``name`` replaced by ``body``.
    Raises ConfigError naming ``where`` when the page lacks either marker or holds them out
    of order."""
    begin, end = _BEGIN.format(name=name), _END.format(name=name)
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < 0 or j < i:
        raise ConfigError(f"{where}: no block {begin!r} ... {end!r} to write the summary into")
    return text[:i + len(begin)] + "\n" + body.rstrip("\n") + "\n" + text[j:]


def load_study(folder) -> Optional[dict]:
    """``comparison.json`` of ``folder`` with each finished run's per-task scores added
    (``data["scores"][method][seed] = {"final": {task: %}, "learned": {task: %}}``, from the
    run's ``metrics.json``), each run's forgetting-signal activations
    (``data["activations"][method][seed]``: merges with ``activations`` > 0 in
    ``merge_trace.csv``), its learning signal's falls (``data["falls"][method][seed] =
    (falls, pairs)``: consecutive merges of a task whose Lambda fell), and its threshold
    peaks (``data["peaks"]``, :func:`threshold_peaks`). None when ``folder`` holds no comparison. Raises ConfigError naming
    the file that is unreadable."""
    folder = Path(folder)
    path = folder / "comparison.json"
    if not path.is_file():
        return None
    data = _json(path)
    _check_comparison(data, path)
    for key in ("scores", "activations", "falls", "settings", "peaks", "timing"):
        data[key] = {}
    for s in data.get("single_task_scores") or {}:
        metrics = _json(folder / "single_task" / f"seed{s}" / "metrics.json")
        data["timing"].setdefault("single_task", {})[int(s)] = run_time(metrics)
    for run in data.get("runs") or []:
        m, s = run["method"], run["seed"]
        run_dir = folder / m / f"seed{s}"
        metrics = _json(run_dir / "metrics.json")
        data["timing"].setdefault(m, {})[s] = run_time(metrics)
        tasks = list(metrics.get("tasks") or [])
        matrix = metrics.get("accuracy_matrix") or []
        learned = {t: matrix[i][i] for i, t in enumerate(tasks) if i < len(matrix) and i < len(matrix[i])}
        data["scores"].setdefault(m, {})[s] = {"final": dict(metrics.get("final_scores") or {}),
                                               "learned": learned}
        fired, falls = trace_counts(run_dir / "merge_trace.csv")
        data["activations"].setdefault(m, {})[s] = fired
        data["falls"].setdefault(m, {})[s] = falls
        peaks = threshold_peaks(run_dir / "signals.csv")
        if peaks:
            data["peaks"].setdefault(m, {})[s] = peaks
        if not data["settings"]:
            data["settings"] = _settings(run_dir)
    for s, a0 in (data.get("single_task_scores") or {}).items():
        data["scores"].setdefault("single_task", {})[s] = {"final": {}, "learned": dict(a0 or {})}
    data["against_base"] = against_base(data, folder)
    return data


def run_time(metrics: dict) -> dict:
    """``{"train": s, "eval": s, "cpu": str}`` of a run's ``metrics.json``: its training and
    evaluation time in seconds (``timing_seconds``; None where absent) and the machine it
    finished on (the CPU model and its widest vector unit, or the kernels PyTorch ran where
    the run recorded them)."""
    timing = metrics.get("timing_seconds") or {}
    mach = metrics.get("machine") or {}
    flags = mach.get("cpu_flags") or {}
    unit = "AVX512" if flags.get("avx512f") else "AVX2" if flags.get("avx2") else None
    cpu = mach.get("cpu") or "unknown"
    if mach.get("cpu_kernels"):
        cpu += f", {mach['cpu_kernels']} kernels"
    elif unit:
        cpu += f" with {unit}"
    return {"train": timing.get("train_seconds"), "eval": timing.get("eval_seconds"), "cpu": cpu}


def _time_table(data: dict) -> list[str]:
    """Each method's time per run, in minutes on one core: training and evaluation, the mean
    and range over its runs, and the machines they ran on."""
    lines = ["| Method | Runs | Training, min (mean; range) | Evaluation, min (mean) | Machines |",
             "|---|---:|---:|---:|---|"]
    order = [r["method"] for r in data["rows"]] + ["single_task"]
    for m in order:
        runs = list((data.get("timing") or {}).get(m, {}).values())
        train = [r["train"] / 60 for r in runs if isinstance(r.get("train"), (int, float))]
        evals = [r["eval"] / 60 for r in runs if isinstance(r.get("eval"), (int, float))]
        if not train:
            continue
        span = f"{sum(train) / len(train):.0f}; {min(train):.0f}–{max(train):.0f}"
        ev = f"{sum(evals) / len(evals):.0f}" if evals else "-"
        cpus = sorted({r["cpu"] for r in runs})
        lines.append(f"| `{m}` | {len(runs)} | {span} | {ev} | {'; '.join(cpus)} |")
    return lines if len(lines) > 2 else []


def _check_comparison(data: dict, path: Path) -> None:
    """ConfigError naming ``path`` and the field when ``comparison.json`` lacks what the
    summaries read (as ``aimmerging compare`` writes it)."""
    def bad(field: str, what: str):
        raise ConfigError(f"{path}: {field} {what}; `aimmerging compare --from` writes it anew")

    for field, keys in (("rows", ("method", "seeds")), ("runs", ("method", "seed", "merges"))):
        items = data.get(field)
        if not isinstance(items, list):
            bad(field, "is not a list")
        for n, item in enumerate(items):
            if not isinstance(item, dict) or any(k not in item for k in keys):
                bad(f"{field}[{n}]", f"is not an object with {', '.join(keys)}")
    if not isinstance(data.get("missing", []), list):
        bad("missing", "is not a list")
    if not isinstance(data.get("seeds", []), list):
        bad("seeds", "is not a list")


def _settings(run_dir: Path) -> dict:
    """``{"split", "n_test"}`` of the run's ``config.yaml`` (what the tables were scored on)."""
    from .rundir import saved_config

    cfg = saved_config(run_dir)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{run_dir / 'config.yaml'}: absent or not a mapping")
    return {"split": (cfg.get("eval") or {}).get("split", "test"),
            "n_test": (cfg.get("data") or {}).get("n_test")}


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a JSON object")
    return data


# --- the pieces -------------------------------------------------------------------------------
def _method_table(data: dict, fwt: bool = True) -> list[str]:
    ref = data.get("reference")
    head = ["Method", "Seeds", "OP ↑"] + (["FWT ↑"] if fwt else []) + ["BWT ↑"]
    head += [f"OP − {ref} [95%]", f"BWT − {ref} [95%]"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in data["rows"]:
        if not r["seeds"]:
            continue                                   # no run yet: named under the table
        is_ref = r["method"] == ref
        cells = [f"`{r['method']}`", str(r["seeds"]), _pm(r["OP_mean"], r["OP_std"])]
        cells += [_pm(r["FWT_mean"], r["FWT_std"])] if fwt else []
        cells += [_pm(r["BWT_mean"], r["BWT_std"])]
        cells += ["(reference)"] * 2 if is_ref else [_diff(r, "OP"), _diff(r, "BWT")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _case_line(data: dict) -> str:
    """One sentence: each merging method's fusion cases, mean per run (empty without one)."""
    parts = [f"`{m}` {a['merges']:.1f} merges ({a['no_op']:.1f} no-op, {a['tie']:.1f} tie, "
             f"{a['discard']:.1f} discard, {a['mixed']:.1f} mixed)"
             for m, a in merge_summary(data).items()]
    return ("- Fusion cases, mean per run (docs/results.md explains them): " + "; ".join(parts)
            + ".") if parts else ""


def _verdicts(data: dict, metrics=("OP", "BWT")) -> list[str]:
    """One sentence per metric: the methods whose difference from the reference excludes 0
    over at least :data:`CLAIM_SEEDS` paired seeds (better or worse), those with no
    measurable difference, and those with too few seeds for a claim."""
    ref, out = data.get("reference"), []
    for col in metrics:
        better, worse, none, few = [], [], [], []
        for r in data["rows"]:
            said, who = verdict(r, col), f"`{r['method']}`"
            if said == "few":
                few.append(f"{who} ({r.get('paired_seeds')})")
            elif said is not None:
                {"above": better, "below": worse, "none": none}[said].append(who)
        parts = []
        if better:
            parts.append(f"above `{ref}`: {', '.join(better)}")
        if worse:
            parts.append(f"below `{ref}`: {', '.join(worse)}")
        if none:
            parts.append(f"no measurable difference from `{ref}`: {', '.join(none)}")
        if few:
            parts.append(f"too few paired seeds for a claim yet (fewer than {CLAIM_SEEDS}): "
                         f"{', '.join(few)}")
        if parts:
            out.append(f"- {col}: " + "; ".join(parts) + ".")
    return out


def _runs_in(data: dict) -> int:
    """The finished runs of the study: every method's, and ``single_task``'s (FWT's a0)."""
    return len(data.get("runs") or []) + len(data.get("single_task_scores") or {})


def _missing(data: dict) -> list[str]:
    missing = data.get("missing") or []
    if not missing:
        return []
    by_method: dict = {}
    for x in missing:
        by_method.setdefault(x["method"], []).append(str(x["seed"]))
    runs = _runs_in(data)
    return [f"The study is not complete: {runs} of {runs + len(missing)} runs are in, and these "
            f"are missing (the means "
            f"and intervals are over the seeds present): "
            + "; ".join(f"`{m}` seed {', '.join(s)}" for m, s in by_method.items()) + "."]


def _recompute(data: Optional[dict], folder: str) -> str:
    command = (data or {}).get("command") or f"aimmerging compare --from {folder}"
    return (f"Every number here is recomputed from the committed run files by `{command}` "
            f"(then `aimmerging docs`).")


def _few_seeds(data: dict) -> str:
    """The methods with a difference but fewer than :data:`CLAIM_SEEDS` paired seeds, in one
    sentence (empty without one)."""
    ref = data.get("reference")
    few = [f"`{r['method']}` ({r.get('paired_seeds')})" for r in data["rows"]
           if r["method"] != ref and verdict(r, "OP") == "few"]
    return (f"- Too few paired seeds for a claim yet (fewer than {CLAIM_SEEDS}): "
            + ", ".join(few) + ".") if few else ""


def readme_summary(data: Optional[dict], folder: str = str(STUDY)) -> str:
    """The README's results: the method table; for each method over enough paired seeds, its
    LA, BWT and OP difference from the reference in words (:func:`_tradeoff_sentences`); the
    methods with too few seeds; the fusion cases per run; how many runs are in. ``data``:
    :func:`load_study`'s; None gives a line saying that no run has been committed."""
    if data is None:
        return (f"No run of the study has been committed yet (`{folder}/` is empty); "
                f"docs/results.md gives its design and commands.")
    settings = data.get("settings") or {}
    n = settings.get("n_test")
    lines = [f"OP is the mean accuracy over the tasks after the last one; BWT, the mean change "
             f"of the earlier tasks' accuracy from right after their training to the end "
             f"(below 0: forgetting); FWT, the gain right after a task's training over "
             f"training it alone (the `single_task` run of the same seed; its mean is over the "
             f"seeds that have one, \"-\" without any); LA, the "
             f"learning accuracy, the mean of each task's accuracy right after its own "
             f"training. All in percent, mean ± standard deviation over seeds; each "
             f"difference from `{data.get('reference')}` with its 95% paired-bootstrap "
             f"interval, in bold where it excludes 0 over at least {CLAIM_SEEDS} paired seeds "
             f"(a claim). The {settings.get('split', 'test')} split"
             + (f", {n} examples per task." if n else "."), ""]
    lines += _method_table(data) + [""]
    lines += tradeoff_sentences(data)
    lines += tradeoff_sentences(data.get("against_base") or {"rows": []})
    lines += [x for x in (_few_seeds(data), _case_line(data)) if x]
    missing, runs = data.get("missing") or [], _runs_in(data)
    done = (f"{runs} of {runs + len(missing)} runs are in, and the means and intervals are over "
            f"the seeds present. " if missing else "")
    return "\n".join(lines + ["", f"{done}docs/results.md has the full tables and the command "
                                  f"that recomputes every number from `{folder}/`."])


def _task_table(data: dict) -> list[str]:
    tasks = data.get("tasks") or []
    scores = data.get("scores") or {}
    head = ["Method"] + [f"{t} (learned → final)" for t in tasks]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(tasks)]
    for m in [r["method"] for r in data["rows"]] + (["single_task"] if "single_task" in scores else []):
        by_seed = scores.get(m) or {}
        if not by_seed:
            continue
        cells = [f"`{m}`"]
        for t in tasks:
            learned = mean_std(v["learned"].get(t) for v in by_seed.values()
                               if v["learned"].get(t) is not None)[0]
            final = mean_std(v["final"].get(t) for v in by_seed.values()
                             if v["final"].get(t) is not None)[0]
            if m == "single_task" or learned is None or final is None:
                cells.append("-" if learned is None else decimals(learned, 1))
            else:
                cells.append(f"{decimals(learned, 1)} → {decimals(final, 1)}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def results_details(data: Optional[dict], folder: str = str(STUDY)) -> str:
    """docs/results.md's tables: the method table with FWT, the verdicts, the missing runs,
    the fusion cases and rehearsal per method (mean per run), and each task's score right
    after its training and after the last task (mean over seeds). ``data``:
    :func:`load_study`'s, or None."""
    if data is None:
        return f"No run of the study has been committed yet (`{folder}/` is empty)."
    lines = ["### Methods", ""] + _method_table(data) + [""] + _verdicts(data)
    lines += [""] + _missing(data) if data.get("missing") else []
    lines += ["", "### Learning and retention", "",
              "LA, the learning accuracy (Riemer et al., 2019), is the mean over tasks of each "
              "task's score right after its own training (a[i][i]): how well a method learns the "
              "new task, where BWT measures how much of it stays (OP = LA + BWT (K − 1) / K). Its "
              "difference from the reference is bootstrapped as OP's and BWT's are "
              "(docs/comparing.md).", ""]
    lines += la_table(data) + [""] + _verdicts(data, ("LA",))
    tradeoff = tradeoff_sentences(data)
    lines += ["", "Over enough paired seeds for a claim:", ""] + tradeoff if tradeoff else []
    base = base_table(data)
    if base:
        lines += ["", "### Against fixed-interval merging", "",
                  f"The methods whose merges the signals decide, against `{BASE}`, the method "
                  f"they become when neither signal votes: the same paired bootstrap, with "
                  f"`{BASE}` as the reference.", ""] + base
    lines += ["", "### Merges and their fusion cases", "",
              "Mean per run (a run is one method at one seed, all tasks); \"with an activation\" "
              "counts the merges whose interval saw the forgetting signal fire (the history loss "
              "above its threshold, `activations` > 0 in `merge_trace.csv`). The peak is each "
              "interval's highest history loss over its threshold (`signals.csv`): the median and "
              "the highest over all the method's intervals; below 1, the signal never fired. "
              "\"Λ fell\" counts, over all the method's runs, the pairs of consecutive merges of "
              "a task whose learning signal Lambda (the task vector's L1 change per step) fell: "
              "each such pair votes P_new down (docs/algorithm.md, \"The merge\"). `fixed_interval` and "
              "`recurrent_kif` log both signals but merge on a fixed schedule.", ""]
    lines += fusion_table(data)
    sentences = merge_sentences(data)
    lines += ["", "In words:", ""] + sentences if sentences else []
    lines += ["", "### Each task, right after its training and after the last task", "",
              "Mean over seeds of the task's score (percent) right after its own stage "
              "(a[i][i]) and after the last stage (a[i][T]); `single_task` trains each task "
              "alone (FWT's a0).", ""]
    lines += _task_table(data)
    times = _time_table(data)
    if times:
        lines += ["", "### Time per run", "",
                  "Each run's training and evaluation time (`timing_seconds` in its "
                  "`metrics.json`), in minutes on one core (`--threads 1`, two runs side by "
                  "side on a 2-core machine), and the machine it finished on: its CPU and "
                  "widest vector unit, or the vector kernels PyTorch ran where the run "
                  "recorded them (the study pins AVX2 ones: \"The machines\" above).", ""] + times
    return "\n".join(lines + ["", _recompute(data, folder)])


def blocks(root) -> list[tuple[Path, str, str]]:
    """``[(page, block name, body)]``: the generated summaries of the checkout ``root``."""
    root = Path(root)
    data = load_study(root / STUDY)
    return [(root / "README.md", "results", readme_summary(data)),
            (root / "docs" / "results.md", "results", results_details(data))]

