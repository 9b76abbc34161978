"""Learning and retention in the study's summaries (:mod:`aimmerging.study_report`): the LA
table, each method's LA, BWT and OP difference from the reference read in words, and the
comparison of the signalled methods with fixed-interval merging; with the number formats of
the cells that both modules write."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .stats import decimals, verdict
from .study_merges import SIGNALLED

__all__ = ["BASE", "against_base", "la_table", "per_seed_differences", "tradeoff_sentences",
           "base_table"]


def _pm(mean, std) -> str:
    if mean is None:
        return "-"
    return decimals(mean, 1) + (f" ± {decimals(std, 1)}" if std is not None else "")


def _diff(row: dict, col: str) -> str:
    d = row.get(f"{col}_diff")
    if d is None:
        return "-"
    low, high = row[f"{col}_diff_low"], row[f"{col}_diff_high"]
    text = f"{decimals(d, 1, True)} [{decimals(low, 1, True)}, {decimals(high, 1, True)}]"
    return f"**{text}**" if verdict(row, col) in ("above", "below") else text   # a claim


#: the method adaptive merging is built on: the methods whose merges the signals decide are
#: compared with it as well as with the study's reference
BASE = "fixed_interval"


def against_base(data: dict, folder) -> Optional[dict]:
    """The comparison of :data:`SIGNALLED`'s methods with :data:`BASE` over the paired seeds,
    recomputed from the run folders of ``folder`` (:func:`aimmerging.multiseed_report.summarize`
    with ``BASE`` as the reference: the same bootstrap as the study's own table). None when
    ``BASE`` or all of those methods have no finished run."""
    from .multiseed_report import summarize

    runs: dict = {}
    for r in data.get("runs") or []:
        runs.setdefault(r["method"], {})[r["seed"]] = Path(folder) / r["method"] / f"seed{r['seed']}"
    methods = [m for m in (BASE,) + SIGNALLED if m in runs]
    if BASE not in runs or len(methods) < 2:
        return None
    return summarize(runs, methods, data.get("seeds") or [], BASE)


def la_table(data: dict) -> list[str]:
    """LA and BWT side by side: each method's learning accuracy (mean ± std over seeds) and its
    LA and BWT difference from the reference, with their 95% intervals."""
    ref = data.get("reference")
    head = ["Method", "Seeds", "LA ↑", f"LA − {ref} [95%]", "BWT ↑", f"BWT − {ref} [95%]"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in data["rows"]:
        if not r["seeds"] or r.get("LA_mean") is None:
            continue
        is_ref = r["method"] == ref
        cells = [f"`{r['method']}`", str(r["seeds"]), _pm(r["LA_mean"], r.get("LA_std")),
                 "(reference)" if is_ref else _diff(r, "LA"),
                 _pm(r["BWT_mean"], r["BWT_std"]), "(reference)" if is_ref else _diff(r, "BWT")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


#: the words of a difference from the reference: (above, below, neither) per metric
_TRADEOFF_WORDS = {
    "LA": ("learns each new task better", "learns each new task less well",
           "no measurable difference in how well it learns each new task"),
    "BWT": ("keeps more of the earlier tasks", "forgets more of the earlier tasks",
            "no measurable difference in how much it forgets"),
    "OP": ("above it overall", "below it overall", "no measurable difference overall"),
}


def per_seed_differences(data: dict, method: str, col: str) -> list[float]:
    """The method's ``col`` (OP, BWT, LA; percentage points) minus the reference's, run by
    run, at each seed where both have it, in seed order: the values whose mean is the
    difference in the summary row."""
    ref, values = data.get("reference"), {}
    for r in data.get("runs") or []:
        if r["method"] in (method, ref) and r.get(col) is not None:
            values.setdefault(r["seed"], {})[r["method"]] = r[col]
    return [v[method] - v[ref] for _, v in sorted(values.items())
            if method in v and ref in v]


def _seeds_agree(data: dict, r: dict, col: str, said: str) -> str:
    """Beside a claim, each seed's own difference, and whether all lie on the claim's side:
    with 3 seeds the bootstrap is narrow (docs/comparing.md), so a reader sees the seeds."""
    d = per_seed_differences(data, r["method"], col)
    if not d:
        return ""
    side = all(x > 0 for x in d) if said == "above" else all(x < 0 for x in d)
    return (f", {'every seed ' + said if side else 'not every seed ' + said} "
            f"({', '.join(decimals(x, 1, True) for x in d)})")


def tradeoff_sentences(data: dict) -> list[str]:
    """For each method with at least :data:`~aimmerging.stats.CLAIM_SEEDS` paired seeds, one
    sentence: its LA, BWT and OP difference from the reference, each with its interval and
    its verdict in words (learns better or less well, keeps more or forgets more, no measurable
    difference); beside a claim, each seed's own difference."""
    ref, out = data.get("reference"), []
    for r in data["rows"]:
        if r["method"] == ref:
            continue
        parts = []
        for col in ("LA", "BWT", "OP"):
            said = verdict(r, col)
            if said in ("above", "below", "none"):
                words = dict(zip(("above", "below", "none"), _TRADEOFF_WORDS[col]))[said]
                agree = _seeds_agree(data, r, col, said) if said != "none" else ""
                parts.append(f"{col} {_diff(r, col)}{agree}: {words}")
        if parts:
            out.append(f"- `{r['method']}` against `{ref}` ({r['paired_seeds']} paired seeds): "
                       + "; ".join(parts) + ".")
    return out


def base_table(data: dict) -> list[str]:
    """The difference of each signalled method from :data:`BASE` (OP, BWT, LA, with 95%
    intervals), then the sentences of those over enough paired seeds."""
    base = data.get("against_base")
    if not base:
        return []
    head = ["Method", "Paired seeds", f"OP − {BASE} [95%]", f"BWT − {BASE} [95%]",
            f"LA − {BASE} [95%]"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in base["rows"]:
        if r["method"] == BASE or not r.get("paired_seeds"):
            continue
        lines.append("| " + " | ".join([f"`{r['method']}`", str(r["paired_seeds"])]
                                       + [_diff(r, c) for c in ("OP", "BWT", "LA")]) + " |")
    sentences = tradeoff_sentences(base)
    return lines + ([""] + sentences if sentences else [])
