"""Statistics of a comparison over seeds: the fusion case of each merge, the mean and standard
deviation over seeds, and a paired hierarchical bootstrap of the OP, BWT and LA differences
between a method and a reference method (SPEC.md "Metrics", "Fusion cases").

The bootstrap (:func:`paired_bootstrap`), for ``B`` draws:

1. draw ``n`` seeds with replacement from the ``n`` seeds where both methods finished;
2. for each drawn seed and each task, draw that task's test examples with replacement
   (``n_t`` indices out of ``n_t``), the SAME indices for the method and the reference,
   which evaluated the same test sample at that seed; a seed drawn twice gets two draws;
3. from the drawn examples compute, per drawn seed, OP = mean over tasks of the mean score
   after the last stage, and BWT = mean over the tasks i < K of the mean of (score after
   the last stage - score right after training task i), and LA (learning accuracy, Riemer et
   al., 2019) = mean over all tasks of the mean score right after training the task itself,
   for the method minus the reference; the draw's difference is the mean over the drawn
   seeds (percentage points). LA uses the same drawn examples as OP and BWT, so it adds no
   random numbers: OP's and BWT's intervals are the same with it or without it.

The interval is the 2.5 and 97.5 percentiles of the ``B`` differences (numpy's linear
interpolation). It covers the variation from the training seed (which also draws the
replay memory, the data order and the LoRA initialisation) and from the finite test sample;
it does not cover other task orders, data sets, models or settings. With one paired seed it
covers the test sample only. The random numbers come from ``numpy.random.default_rng(seed)``
in this order: the seed indices (a ``B x n`` array), then for each of the ``n`` positions,
for each paired seed in order, for each task in order, a ``B x n_t`` array of indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

__all__ = ["FUSION_CASES", "fusion_case", "fusion_counts", "mean_std", "ExampleScores",
           "paired_bootstrap", "excludes_zero", "verdict", "BOOTSTRAP_DRAWS", "BOOTSTRAP_SEED", "CLAIM_SEEDS"]

#: the fusion cases, in the order of the tables (SPEC.md "Fusion cases")
FUSION_CASES = ("no-op", "tie", "discard", "mixed")
#: default number of bootstrap draws, and the fixed seed of the bootstrap's random numbers
BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 20250
#: the fewest paired seeds over which a difference whose interval excludes 0 is claimed as
#: one method above or below another: over fewer, the interval covers too little of the
#: training's own variation (with one seed, the test sample's alone)
CLAIM_SEEDS = 3


def fusion_case(alpha_new: float, alpha_past: float) -> str:
    """The fusion case of one merge from its weights (``merge_trace.csv``'s ``alpha_new``,
    ``alpha_past``), after SPEC.md "Fusion cases" (theta = theta_anchor + alpha_new * tau_new
    + alpha_past * tau_past):

    - ``"no-op"``, (1, 0): the merge changes nothing, the parameters stay theta_j (the literal
      reading's first merge of a task without an activation: P_new = 0.5, P_past = 0);
    - ``"tie"``, (0.5, 0.5): from P_new = P_past = 0, neither signal voted;
    - ``"discard"``, (0, 1): the new-task progress since the anchor is replaced by the
      rehearsal (P_new = 0, as a learning signal that only falls gives);
    - ``"mixed"``: any other pair.

    The weights are compared exactly: the controller computes them as ratios of counts, so
    these cases are exact in the trace (written with 6 significant digits). Raises ValueError
    for a weight that is not a finite number.
    """
    a, p = float(alpha_new), float(alpha_past)
    if not (math.isfinite(a) and math.isfinite(p)):
        raise ValueError(f"fusion weights ({alpha_new}, {alpha_past}) are not finite")
    if a == 1.0 and p == 0.0:
        return "no-op"
    if a == 0.5 and p == 0.5:
        return "tie"
    if a == 0.0 and p == 1.0:
        return "discard"
    return "mixed"


def fusion_counts(rows: Iterable[dict]) -> dict[str, int]:
    """``{case: number of merges}`` for every case of :data:`FUSION_CASES` (zeros included)
    over the rows of a ``merge_trace.csv`` (dicts with ``alpha_new`` and ``alpha_past``).
    Raises ValueError naming the row (1 = the first after the header) whose weights are
    missing or not numbers."""
    counts = {c: 0 for c in FUSION_CASES}
    for n, row in enumerate(rows, start=1):
        try:
            counts[fusion_case(row["alpha_new"], row["alpha_past"])] += 1
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"row {n}: alpha_new/alpha_past: {exc}") from None
    return counts


def decimals(value: float, digits: int, signed: bool = False) -> str:
    """``value`` written with ``digits`` decimals, as the tables over seeds write their
    numbers: a half is rounded away from 0 (2.95 -> 3.0, -11.15 -> -11.2), after rounding to
    9 decimals, so that float noise (2.9499999999999993 for a mean of 2.95) does not decide;
    0 is never written with a minus sign. ``signed`` writes a + before a positive value."""
    from decimal import ROUND_HALF_UP, Decimal

    d = Decimal(repr(round(float(value), 9))).quantize(Decimal(1).scaleb(-digits),
                                                        rounding=ROUND_HALF_UP)
    if d == 0:
        d = abs(d)
    return f"{d:+f}" if signed else f"{d:f}"


def mean_std(values: Iterable[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation (n - 1 in the denominator) of the values that are
    not None; (None, None) without any, standard deviation None with only one."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


@dataclass
class ExampleScores:
    """One run's per-example scores (0-1) on each task's test sample, in task order.

    ``final[i]``: task i's scores after the last stage (length n_i); ``diag[i]``: after
    training task i itself, or None where it was not evaluated then (mtl); ``ids[i]``: the
    examples' ids, which must be the same for two runs compared by :func:`paired_bootstrap`.
    """

    tasks: list
    ids: list
    final: list
    diag: list


def _check_pair(m: ExampleScores, r: ExampleScores, where: str) -> None:
    if list(m.tasks) != list(r.tasks):
        raise ValueError(f"{where}: tasks {', '.join(m.tasks)} are not the reference's "
                         f"{', '.join(r.tasks)}")
    for t, a, b in zip(m.tasks, m.ids, r.ids):
        if list(a) != list(b):
            raise ValueError(f"{where}: task {t} was evaluated on other test examples than "
                             f"the reference's ({len(a)} and {len(b)} examples, other ids)")


def _per_example(m: ExampleScores, r: ExampleScores) -> tuple[list, Optional[list], Optional[list]]:
    """Per task, the method-minus-reference differences of each example for OP (final scores),
    for BWT (final - diagonal, tasks i < K; None when one of those diagonals is missing) and
    for LA (diagonal, every task; None when a diagonal is missing)."""
    import numpy as np

    def arr(v):
        return np.asarray(v, dtype=float)

    op = [arr(a) - arr(b) for a, b in zip(m.final, r.final)]
    k = len(m.tasks)
    bwt = None
    if k >= 2 and all(d is not None for d in m.diag[:-1] + r.diag[:-1]):
        bwt = [(arr(m.final[i]) - arr(m.diag[i])) - (arr(r.final[i]) - arr(r.diag[i]))
               for i in range(k - 1)]
    la = None
    if all(d is not None for d in m.diag + r.diag):
        la = [arr(a) - arr(b) for a, b in zip(m.diag, r.diag)]
    return op, bwt, la


def paired_bootstrap(pairs: Sequence[tuple[ExampleScores, ExampleScores]],
                     draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED,
                     level: float = 0.95) -> dict[str, Optional[tuple[float, float]]]:
    """The ``level`` interval (percentage points) of the OP, BWT and LA difference method minus
    reference, by the hierarchical paired bootstrap of the module docstring.

    ``pairs``: one (method, reference) pair of :class:`ExampleScores` per seed where both
    finished. Returns ``{"OP": (low, high), "BWT": (low, high), "LA": (low, high)}``; a value
    is None without pairs, BWT is None with one task or a missing diagonal of a task before
    the last, and LA is None with any diagonal missing (mtl). Raises ValueError when a pair's
    tasks or test examples differ, or ``draws`` < 1, or a score is not finite.
    """
    import numpy as np

    if draws < 1:
        raise ValueError(f"bootstrap draws: {draws}, expected at least 1")
    if not pairs:
        return {"OP": None, "BWT": None, "LA": None}
    diffs = []
    for n, (m, r) in enumerate(pairs):
        _check_pair(m, r, f"seed pair {n + 1}")
        parts = _per_example(m, r)
        if not all(np.isfinite(d).all() for part in parts for d in (part or [])):
            raise ValueError(f"seed pair {n + 1}: a per-example score is missing or not finite")
        diffs.append(parts)
    metrics = {name: all(d[j] is not None for d in diffs)
               for j, name in enumerate(("OP", "BWT", "LA"))}
    rng = np.random.default_rng(seed)
    n = len(diffs)
    chosen = rng.integers(0, n, size=(draws, n))
    sums = {name: np.zeros(draws) for name in metrics}
    rows = np.arange(draws)
    for p in range(n):
        at = {name: np.empty((n, draws)) for name in metrics}
        for s, (op, bwt, la) in enumerate(diffs):
            per_task: dict = {name: [] for name in metrics}
            for i, d in enumerate(op):
                idx = rng.integers(0, len(d), size=(draws, len(d)))
                per_task["OP"].append(d[idx].mean(axis=1))
                if metrics["BWT"] and i < len(bwt):
                    per_task["BWT"].append(bwt[i][idx].mean(axis=1))
                if metrics["LA"]:
                    per_task["LA"].append(la[i][idx].mean(axis=1))
            for name, used in metrics.items():
                if used:
                    at[name][s] = np.mean(per_task[name], axis=0)
        for name, used in metrics.items():
            if used:
                sums[name] += at[name][chosen[:, p], rows]
    tail = 100.0 * (1.0 - level) / 2.0

    def interval(total):
        low, high = np.percentile(100.0 * total / n, [tail, 100.0 - tail])
        return float(low), float(high)

    return {name: interval(sums[name]) if used else None for name, used in metrics.items()}


def excludes_zero(interval: Optional[Sequence[float]]) -> bool:
    """Whether an interval (low, high) lies wholly above or below 0 (False for None)."""
    return interval is not None and (interval[0] > 0 or interval[1] < 0)


def verdict(row: dict, col: str) -> Optional[str]:
    """What a summary row's difference from the reference supports, for metric ``col``
    (``"OP"``, ``"BWT"``, ``"LA"``...): ``"above"`` or ``"below"`` when its interval
    (``<col>_diff_low``, ``<col>_diff_high``, percentage points) excludes 0 over at least
    :data:`CLAIM_SEEDS` paired seeds (``paired_seeds``), ``"none"`` when it holds 0 over that
    many, ``"few"`` over fewer seeds, whatever the interval; None when the row has no
    difference (the reference itself, or no paired seed). Every report of the study words
    its differences from this one reading."""
    if row.get(f"{col}_diff") is None:
        return None
    if (row.get("paired_seeds") or 0) < CLAIM_SEEDS:
        return "few"
    low, high = row[f"{col}_diff_low"], row[f"{col}_diff_high"]
    return "above" if low > 0 else "below" if high < 0 else "none"
