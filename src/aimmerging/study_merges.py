"""The merges of a committed study, for docs/results.md (:mod:`aimmerging.study_report`):
what each run's ``merge_trace.csv`` and ``signals.csv`` say of its signals (activations, the
falls of Lambda, each interval's peak history loss over its threshold), and the fusion table
and sentences made from them per method."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

from .errors import ConfigError

__all__ = ["trace_counts", "threshold_peaks", "merge_summary", "fusion_table", "merge_sentences",
           "SIGNALLED"]


def trace_counts(trace: Path) -> tuple[int, tuple[int, int]]:
    """``(merges with an activation, (Lambda falls, pairs))`` of a ``merge_trace.csv``; a pair
    is two consecutive merges of one task. ConfigError naming the file and row otherwise."""
    fired, falls, pairs, last = 0, 0, 0, None
    if not Path(trace).is_file():
        raise ConfigError(f"{trace}: absent; `aimmerging compare --from` needs it too")
    with open(trace, newline="", encoding="utf-8") as f:
        for n, r in enumerate(csv.DictReader(f), start=1):
            try:
                act = float(r.get("activations") or 0)
                lam = float(r["lambda"]) if r.get("lambda") not in (None, "") else None
                if not math.isfinite(act) or (lam is not None and not math.isfinite(lam)):
                    raise ValueError
            except ValueError:
                raise ConfigError(f"{trace}, row {n}: activations or lambda is not a finite "
                                  f"number") from None
            fired += act > 0
            if last is not None and lam is not None and last[0] == r.get("task"):
                pairs += 1
                falls += lam < last[1]
            last = (r.get("task"), lam) if lam is not None else None
    return fired, (falls, pairs)


def threshold_peaks(signals) -> list[float]:
    """For each merge interval of a run with a forgetting threshold (SPEC.md: delta =
    gamma_forget x the mean history loss of the interval's first steps), the interval's
    highest history loss divided by delta, from ``signals.csv`` (``history_loss``,
    ``threshold``): a value >= 1 means the signal fired in that interval, one far below 1
    that the history loss never came near. An interval is a stretch of consecutive steps of
    one stage with the same threshold. [] when the file is absent or has no threshold.
    Raises ConfigError naming the file and row when a cell is not a number."""
    from .traces import as_float, read_csv_rows

    peaks: list[float] = []
    last = None
    for n, row in enumerate(read_csv_rows(Path(signals)), start=1):
        try:
            loss, delta = as_float(row.get("history_loss")), as_float(row.get("threshold"))
        except ValueError:
            raise ConfigError(f"{signals}, row {n}: history_loss or threshold is not a "
                              f"number") from None
        if loss is None or delta is None or delta <= 0:
            last = None
            continue
        key = (row.get("stage"), delta)
        if key != last:
            peaks.append(loss / delta)
            last = key
        else:
            peaks[-1] = max(peaks[-1], loss / delta)
    return peaks



def merge_summary(data: dict) -> dict:
    """``{method: aggregates}`` over each merging method's runs (methods without a merge are
    left out): ``runs``; the means per run of ``merges``, the four cases, ``fired`` (merges
    with an activation), ``rehearsal`` (steps run) and ``main`` (main steps); ``ratios`` (every
    interval's threshold peak, sorted); ``falls`` and ``pairs`` (summed over the runs)."""
    by_method: dict = {}
    for r in data.get("runs") or []:
        by_method.setdefault(r["method"], []).append(r)
    out = {}
    for m, rs in by_method.items():
        if not any(r["merges"] for r in rs):
            continue
        n = len(rs)
        mean = lambda key: sum(r[key] or 0 for r in rs) / n   # noqa: E731
        fell = list(((data.get("falls") or {}).get(m) or {}).values())
        out[m] = {"runs": n, "merges": mean("merges"),
                  **{c: mean(c) for c in ("no_op", "tie", "discard", "mixed")},
                  "fired": sum(((data.get("activations") or {}).get(m) or {}).values()) / n,
                  "ratios": sorted(v for p in ((data.get("peaks") or {}).get(m) or {}).values() for v in p),
                  "falls": sum(f for f, _ in fell), "pairs": sum(p for _, p in fell),
                  "rehearsal": mean("rehearsal_steps_run"), "main": mean("main_steps")}
    return out


def fusion_table(data: dict) -> list[str]:
    head = ["Method", "Runs", "Merges", "No-op (1, 0)", "Tie (0.5, 0.5)", "Discard (0, 1)",
            "Mixed", "With an activation", "Peak loss / threshold (median, max)", "Λ fell",
            "Rehearsal steps run", "Main steps"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for m, a in merge_summary(data).items():
        r = a["ratios"]
        cells = [f"`{m}`", str(a["runs"]), f"{a['merges']:.1f}"]
        cells += [f"{a[c]:.1f}" for c in ("no_op", "tie", "discard", "mixed")]
        cells += [f"{a['fired']:.1f}", f"{statistics.median(r):.2f}, {r[-1]:.2f}" if r else "-",
                  f"{a['falls']} of {a['pairs']}" if a["pairs"] else "-",
                  f"{a['rehearsal']:.1f}", f"{a['main']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


#: the methods whose merges the signals decide, described in words under the fusion table
SIGNALLED = ("aimmerging", "aimmerging_reference")


def merge_sentences(data: dict) -> list[str]:
    """A sentence per signalled method: how often its forgetting signal fired, how often its
    learning signal fell, what share of its merges were no-ops or ties, and its rehearsal
    against ``fixed_interval``'s (all per run, from :func:`merge_summary`)."""
    summary, lines = merge_summary(data), []
    fixed = summary.get("fixed_interval")
    for m in SIGNALLED:
        a = summary.get(m)
        if a is None:
            continue
        r = a["ratios"]
        forced = " (its code forces one at the deferral limit 2S)" if m == "aimmerging_reference" else ""
        text = (f"- `{m}` ({a['runs']} run{'s' if a['runs'] > 1 else ''}): an activation was "
                f"counted in {a['fired']:.1f} of {a['merges']:.1f} merge intervals a run{forced}")
        if r:
            text += (f", its history loss peaking at a median {statistics.median(r):.2f} of the "
                     f"threshold (in all its runs, {sum(v >= 1 for v in r)} of {len(r)} intervals reached it, "
                     f"each task's last stretch after its last merge included)")
        if a["pairs"]:
            text += f"; Lambda fell in {a['falls']} of its {a['pairs']} consecutive merge pairs"
        text += (f"; {a['no_op'] + a['tie']:.1f} of its {a['merges']:.1f} merges a run were a "
                 f"no-op or a tie; it ran {a['rehearsal']:.1f} rehearsal steps a run")
        if fixed is not None:
            text += f", against {fixed['rehearsal']:.1f} for `fixed_interval`"
        lines.append(text + ".")
    return lines
