"""The :class:`MergePlan` returned by ``MergeController.on_merge`` (pure Python)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional

__all__ = ["MergePlan"]


@dataclass(frozen=True)
class MergePlan:
    """What the trainer must do at a merge (SPEC.md on_merge step 7; paper eq. 3-8).

    Attributes:
        alpha_new: weight of tau_new = theta_j - theta_anchor (paper eq. 7-8, alpha_1).
        alpha_past: weight of tau_past = theta_M - theta_j (paper eq. 7-8, alpha_2).
        rehearsal_steps: optimizer steps of rehearsal on memory batches:
            ``max(1, ceil(S'/2))`` (paper) or the new S (reference_code).
        interval_run: S', the steps actually run since the previous merge / task start.
        lambda_: the learning signal Lambda appended to H (l1 per step, paper eq. 3).
        next_interval: the interval S in force after this merge, in steps (paper eq. 4).
        up: pairs of the trend window that rose.
        down: pairs of the trend window that fell (ties count for neither).
        activations: forgetting activations F counted before the reset.
        threshold: the threshold delta (loss value) in force at the merge.
        rehearsal_uses_main_optimizer: True only for reference_code (its rehearsal
            steps the main optimizer); the paper variant uses a separate AdamW.
    """

    alpha_new: float
    alpha_past: float
    rehearsal_steps: int
    interval_run: int
    lambda_: float
    next_interval: int
    up: int
    down: int
    activations: int
    threshold: Optional[float]
    rehearsal_uses_main_optimizer: bool = False

    @property
    def learning_signal(self) -> float:
        """Alias of ``lambda_``: Lambda_b = l1 / S (paper eq. 3)."""
        return self.lambda_

    @property
    def skip_rehearsal(self) -> bool:
        """True when ``alpha_past == 0``: the fusion discards tau_past, so the
        rehearsal may be skipped (theta = theta_anchor + alpha_new * tau_new)."""
        return self.alpha_past == 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the plan as a plain dict (for logs), field names as keys."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

