"""The ``reference_code`` variant's rules (the authors' released code, end of SPEC.md).

Plain functions that :class:`aimmerging.controller.core.MergeController` calls
when ``config.variant == "reference_code"``; ``history`` is the controller's
learning-signal history H. Pure Python (no torch, no numpy).
"""

from __future__ import annotations

import math
from typing import Sequence

from .config import ControllerConfig

__all__ = [
    "REFERENCE_COLD_START",
    "REFERENCE_HALVING",
    "REFERENCE_TABLE_SPLIT",
    "last_pair_trend",
    "reference_table",
    "reference_update",
]

#: reference_code: cold start lasts while the Lambda values *before* the current one number
#: at most this many (the code reads the list before appending), so S first changes at the
#: 5th merge of a task.
REFERENCE_COLD_START = 3
#: reference_code: interval (steps) at/above which the rise result is halved and the
#: fall factor uses +0.5.
REFERENCE_HALVING = 64
#: reference_code: interval (steps) above which the weight table uses its "large S" row.
REFERENCE_TABLE_SPLIT = 70


def last_pair_trend(history: Sequence[float]) -> tuple[int, int]:
    """``(up, down)`` of the last pair of H only (a tie counts for neither)."""
    h = history
    if len(h) < 2:
        return 0, 0
    if h[-1] > h[-2]:
        return 1, 0
    if h[-1] < h[-2]:
        return 0, 1
    return 0, 0


def reference_table(f: int, s: int) -> tuple[float, float]:
    """Fusion weights from the table keyed on F (activations) and S (before the update)."""
    if f > 1:
        return (0.5, 0.5) if s <= REFERENCE_TABLE_SPLIT else (0.4, 0.6)
    return (0.6, 0.4) if s <= REFERENCE_TABLE_SPLIT else (0.5, 0.5)


def reference_update(cfg: ControllerConfig, history: Sequence[float], s: int) -> int:
    """The interval after a merge, from the last two Lambda values of H (S = ``s`` now).

    ``history`` already holds the current Lambda; the authors' code looks at the earlier
    values only (``len(history) - 1``) for its cold start, so S is kept for the first four
    merges of a task (SPEC.md, the ``reference_code`` variant)."""
    h = history
    if len(h) - 1 <= REFERENCE_COLD_START:
        return s
    cur, prev = h[-1], h[-2]
    if cur >= prev:  # rise or tie
        if prev == 0.0:
            new = s if cur == 0.0 else 0
        else:
            new = int(s / (cur / prev))
        new = max(cfg.s_min, new)
        if new >= REFERENCE_HALVING:
            new = new // 2
    else:  # fall
        bonus = 1.0 if s < REFERENCE_HALVING else 0.5
        grown = math.inf if cur == 0.0 else s * (prev / cur + bonus)
        # a huge (or overflowing) ratio saturates at S_max
        new = cfg.s_max if not grown < cfg.s_max else int(grown)
    return max(cfg.s_min, min(cfg.s_max, new))
