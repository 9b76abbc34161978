"""The AIMMerging merge controller (SPEC.md "Merge controller"; paper section 3.1).

Pure Python: this package imports neither torch nor numpy, so the trainer, the
tests and any analysis script can drive it without a GPU stack.

Protocol, once per task ``k >= 2`` (task 1 has no controller)::

    ctl = MergeController(ControllerConfig())
    ctl.reset()                          # start of the task
    for step in ...:                     # one call per optimizer step
        optimizer.step()
        if ctl.observe(history_loss):    # loss on one memory batch (no grad)
            plan = ctl.on_merge(l1)      # l1 = sum |theta_now - theta_anchor|
            ...                          # rehearsal + fusion (aimmerging.fusion)

Units: ``history_loss`` is a loss value (mean cross-entropy of a memory batch);
intervals, ``n`` and rehearsal lengths are counted in optimizer steps; ``l1`` is a
sum of absolute parameter differences; the learning signal Lambda is ``l1`` per
step.

Variants
--------
``variant="paper"`` (default) implements SPEC.md's rules exactly, with its
**[decision]** items:

* calibration window ``c = max(1, floor(2*S/3))`` steps;
* ``Lambda = l1 / S'`` with ``S'`` the interval actually run;
* ``P_new = 0.5`` when the history has no pair yet;
* ``alpha_new = alpha_past = 0.5`` when ``P_new + P_past == 0``;
* cold start: the interval is updated only once ``len(H) > L_w``;
* rounding of the interval update rounds halves up (``floor(x + 0.5)``).

``variant="reference_code"`` reproduces the authors' released code as listed at the
end of SPEC.md:

* ``Lambda = l1 / S`` with ``S`` the *scheduled* interval (before the update);
* only the last two Lambda values are compared (the window ``L_w`` is unused);
  cold start: the code reads the Lambda values *before* appending the current one and
  makes no change while they number ``<= 3`` (the literal 3 of the code, not
  ``window``), so S first changes at the 5th merge of a task;
* rise or tie (``Lambda_b >= Lambda_{b-1}``):
  ``S = max(S_min, int(S / (Lambda_b / Lambda_{b-1})))``, then halved
  (``S // 2``) if the result is ``>= 64``;
  fall: ``S = min(S_max, int(S * (Lambda_{b-1} / Lambda_b + 1)))`` when the old
  ``S < 64``, else with ``+ 0.5`` instead of ``+ 1``;
* fusion weights from the table keyed on ``F`` (activations at the merge) and the
  interval ``S`` before the update: ``F > 1, S <= 70: (0.5, 0.5)``;
  ``F > 1, S > 70: (0.4, 0.6)``; ``F <= 1, S <= 70: (0.6, 0.4)``;
  ``F <= 1, S > 70: (0.5, 0.5)``;
* the rehearsal runs the *new* S steps with the main optimizer
  (``plan.rehearsal_steps == plan.next_interval`` and
  ``plan.rehearsal_uses_main_optimizer is True``);
* the threshold is calibrated over steps ``1 .. floor(2*S/3) + 1`` after a merge;
  monitoring (activation counting) starts at the step after that, and a loss at or
  above the threshold counts (``l >= delta``; the paper variant counts ``l > delta``);
* if the loss never crosses the threshold, one activation is forced at step
  ``n == 2*S``, so the merge happens there through the on-time rule.

Decisions taken here where SPEC.md is silent (also in the docstrings of the
submodules):

* **Ablation -LS** (``use_learning_signal=False``): S stays ``S_init`` for the
  whole task; Lambda is still recorded in H (and up/down reported) for logging,
  but ``P_new = 0.5``. The threshold is still calibrated over the first
  ``c = max(1, floor(2*S/3))`` steps after a merge, and the merge fires at the
  first activation after calibration: no S-time rule and no 2S limit, so a task
  whose history loss never crosses the threshold has no merge at all.
* **Ablation -FS** (``use_forgetting_signal=False``): merge exactly when
  ``n >= S`` (i.e. every S steps); ``P_past = 0.5``. The threshold and the
  activation count are still computed and reported, but play no role.
* **Both ablations**: the -FS timing wins (merge every ``S_init`` steps) and the
  weights are 0.5 / 0.5, a fixed-interval merging baseline.
* **+MGM** (``fixed_alphas=(a_new, a_past)``): the two given weights replace the
  computed ones, for every merge, in both variants; they must lie in [0, 1] but
  need not sum to 1. Timing and interval rules are unchanged.
* ``variant="reference_code"`` cannot be combined with the -LS / -FS ablations
  (the released code has no such switches): ``ValueError``.
* reference_code with zero Lambda values: a tie ``0 -> 0`` is treated as a ratio
  of 1; a rise from 0 (ratio infinite) gives ``S_min``; a fall to 0 gives
  ``S_max`` (so does a ratio that overflows). Results are always clamped to
  ``[S_min, S_max]`` (the halving of the rise case can otherwise go below
  ``S_min`` when ``S_min > 32``).
* The forced activation of reference_code counts in ``activations`` (so
  ``plan.activations == 1`` for a merge at 2S) and hence in the weight table.
* ``observe()`` raises ``RuntimeError`` while a merge is due (``on_merge()`` must
  come first), and ``ValueError`` for a non-finite loss. ``on_merge()`` raises
  ``RuntimeError`` unless the previous ``observe()`` returned True, and
  ``ValueError`` for a NaN, infinite or negative ``l1``.
* ``plan.threshold`` is the threshold in force at the merge (before the reset).
* ``plan.skip_rehearsal`` is True when ``alpha_past == 0``: the fusion then ignores
  tau_past and the trainer may skip the rehearsal (``method.skip_idle_rehearsal``,
  on by default; the rehearsal AdamW then sees fewer steps in the task).
* Steps after a task's last merge are not fused: the task ends with the parameters
  as trained.
* Config errors raise :class:`ControllerConfigError`, a subclass of both
  ``ValueError`` and :class:`aimmerging.errors.ConfigError`; its message starts
  with ``ControllerConfig.<field>``.

Layout (one module per idea; the submodules import one another, never the
package's re-exports):

* :mod:`aimmerging.controller.config`: ``ControllerConfig``, its validation and
  ``ControllerConfigError``; the variant names ``PAPER`` / ``REFERENCE_CODE``.
* :mod:`aimmerging.controller.plan`: ``MergePlan``, what the trainer does at a merge.
* :mod:`aimmerging.controller.core`: ``MergeController`` (observe / on_merge, the
  paper rules, checkpoints), ``round_half_up`` and ``gammas_for``.
* :mod:`aimmerging.controller.reference`: the ``reference_code`` rules as plain
  functions that the core calls.
"""

from __future__ import annotations

from .config import PAPER, REFERENCE_CODE, VARIANTS, ControllerConfig, ControllerConfigError
from .core import GAMMA_SWITCH, MergeController, gammas_for, round_half_up  # noqa: F401
from .plan import MergePlan
from .reference import (  # noqa: F401 - re-exported for aimmerging.controller.<name>
    REFERENCE_COLD_START,
    REFERENCE_HALVING,
    REFERENCE_TABLE_SPLIT,
)

__all__ = [
    "PAPER",
    "REFERENCE_CODE",
    "VARIANTS",
    "ControllerConfig",
    "ControllerConfigError",
    "MergeController",
    "MergePlan",
    "round_half_up",
]
