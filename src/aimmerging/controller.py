"""The AIMMerging merge controller (SPEC.md "Merge controller"; paper section 3.1).

Pure Python: this module imports neither torch nor numpy, so the trainer, the
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
  cold start: no change while ``len(H) <= 3`` (the literal 3 of the code, not
  ``window``);
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
  monitoring (activation counting) starts at the step after that;
* if the loss never crosses the threshold, one activation is forced at step
  ``n == 2*S``, so the merge happens there through the on-time rule.

Decisions taken here where SPEC.md is silent (also in the docstrings below):

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
* Config errors raise :class:`ControllerConfigError`, a subclass of both
  ``ValueError`` and :class:`aimmerging.errors.ConfigError`; its message starts
  with ``ControllerConfig.<field>``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Optional

from aimmerging.errors import ConfigError

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

PAPER = "paper"
REFERENCE_CODE = "reference_code"
VARIANTS = (PAPER, REFERENCE_CODE)

#: SPEC.md gamma table: above this interval (in steps) gamma_up=1.5, gamma_down=2.
GAMMA_SWITCH = 64
#: reference_code: cold start lasts while len(H) <= this many Lambda values.
REFERENCE_COLD_START = 3
#: reference_code: interval (steps) at/above which the rise result is halved and the
#: fall factor uses +0.5.
REFERENCE_HALVING = 64
#: reference_code: interval (steps) above which the weight table uses its "large S" row.
REFERENCE_TABLE_SPLIT = 70

_STATE_FORMAT = "aimmerging.MergeController"
_STATE_VERSION = 1


def round_half_up(x: float) -> int:
    """Round ``x`` to the nearest integer, halves up (``floor(x + 0.5)``).

    SPEC.md step 5 ("round() rounds halves up"); unlike Python's ``round`` it
    never rounds half to even: ``round_half_up(32.5) == 33``.
    """
    return int(math.floor(x + 0.5))


def gammas_for(interval: int) -> tuple[float, float]:
    """Return ``(gamma_up, gamma_down)`` for the interval ``interval`` (steps).

    SPEC.md gamma table: ``S > 64`` gives ``(1.5, 2.0)``, otherwise ``(2.0, 1.5)``.
    """
    if interval > GAMMA_SWITCH:
        return 1.5, 2.0
    return 2.0, 1.5


class ControllerConfigError(ConfigError, ValueError):
    """An out-of-range or ill-typed :class:`ControllerConfig` field.

    ``field`` holds the field name; the message starts with ``ControllerConfig.<field>``.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"ControllerConfig.{field}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ControllerConfig:
    """Hyperparameters of the merge controller (SPEC.md; paper section 3.1, appendix D).

    Attributes:
        s_init: initial merge interval S_init, in optimizer steps (paper: 8).
        window: sliding-window length L_w, in Lambda values / merges (paper: 3);
            also the cold-start length of the ``paper`` variant.
        s_min: smallest interval S_min, in steps (paper: 2).
        s_max: largest interval S_max, in steps (paper: 128).
        gamma_forget: factor on the mean calibration loss giving the threshold
            delta (paper: 2.0); must be > 0.
        f_max: forgetting activations F_max that trigger an early merge (paper: 3).
        use_learning_signal: False is the "-LS" ablation (S fixed at S_init,
            P_new = 0.5, merge at the first activation, no 2S limit).
        use_forgetting_signal: False is the "-FS" ablation (merge every S steps,
            P_past = 0.5).
        fixed_alphas: ``(alpha_new, alpha_past)`` replacing the computed weights,
            the "+MGM" ablation; each in [0, 1]. ``None`` (default) computes them.
        variant: ``"paper"`` (SPEC.md rules) or ``"reference_code"`` (the authors'
            released code, see the module docstring).
    """

    s_init: int = 8
    window: int = 3
    s_min: int = 2
    s_max: int = 128
    gamma_forget: float = 2.0
    f_max: int = 3
    use_learning_signal: bool = True
    use_forgetting_signal: bool = True
    fixed_alphas: Optional[tuple[float, float]] = None
    variant: str = PAPER

    def __post_init__(self) -> None:
        for name in ("s_init", "window", "s_min", "s_max", "f_max"):
            if not _is_int(getattr(self, name)):
                raise ControllerConfigError(
                    name, f"must be an int, got {getattr(self, name)!r}"
                )
        if self.s_min < 1:
            raise ControllerConfigError("s_min", f"must be >= 1 step, got {self.s_min}")
        if self.s_min > self.s_max:
            raise ControllerConfigError(
                "s_min", f"must be <= s_max ({self.s_max}), got {self.s_min}"
            )
        if not self.s_min <= self.s_init <= self.s_max:
            raise ControllerConfigError(
                "s_init",
                f"must lie in [s_min, s_max] = [{self.s_min}, {self.s_max}], got {self.s_init}",
            )
        if self.window < 1:
            raise ControllerConfigError("window", f"must be >= 1, got {self.window}")
        if self.f_max < 1:
            raise ControllerConfigError("f_max", f"must be >= 1, got {self.f_max}")
        g = self.gamma_forget
        if not _is_real(g) or not math.isfinite(g) or not g > 0:
            raise ControllerConfigError(
                "gamma_forget", f"must be a finite number > 0, got {g!r}"
            )
        object.__setattr__(self, "gamma_forget", float(g))
        for name in ("use_learning_signal", "use_forgetting_signal"):
            if not isinstance(getattr(self, name), bool):
                raise ControllerConfigError(
                    name, f"must be a bool, got {getattr(self, name)!r}"
                )
        if self.fixed_alphas is not None:
            fa = self.fixed_alphas
            if isinstance(fa, (str, bytes)) or not hasattr(fa, "__len__") or len(fa) != 2:
                raise ControllerConfigError(
                    "fixed_alphas", f"must be a pair (alpha_new, alpha_past), got {fa!r}"
                )
            for a in fa:
                if not _is_real(a) or not math.isfinite(a) or not 0.0 <= a <= 1.0:
                    raise ControllerConfigError(
                        "fixed_alphas", f"each weight must lie in [0, 1], got {fa!r}"
                    )
            object.__setattr__(self, "fixed_alphas", (float(fa[0]), float(fa[1])))
        if self.variant not in VARIANTS:
            raise ControllerConfigError(
                "variant", f"must be one of {VARIANTS}, got {self.variant!r}"
            )
        if self.variant == REFERENCE_CODE:
            for name in ("use_learning_signal", "use_forgetting_signal"):
                if not getattr(self, name):
                    raise ControllerConfigError(
                        name,
                        "the -LS/-FS ablations are not available with "
                        "variant='reference_code'",
                    )

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-serialisable plain types (``fixed_alphas`` as a list)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["fixed_alphas"] is not None:
            d["fixed_alphas"] = list(d["fixed_alphas"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ControllerConfig":
        """Build a config from :meth:`to_dict` output (unknown keys raise ``ControllerConfigError``)."""
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ControllerConfigError(str(key), "unknown field")
        kwargs = dict(d)
        if kwargs.get("fixed_alphas") is not None:
            kwargs["fixed_alphas"] = tuple(kwargs["fixed_alphas"])
        return cls(**kwargs)


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


def _finite_float(name: str, value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x!r}")
    return x


class MergeController:
    """Decides when to merge and with which weights (SPEC.md; paper section 3.1-3.2).

    One instance serves a whole run; call :meth:`reset` at the start of every
    task k >= 2, :meth:`observe` once per optimizer step, and :meth:`on_merge`
    right after ``observe`` returned True.
    """

    def __init__(self, config: Optional[ControllerConfig] = None) -> None:
        if config is None:
            config = ControllerConfig()
        if not isinstance(config, ControllerConfig):
            raise TypeError(f"config must be a ControllerConfig, got {type(config).__name__}")
        self._config = config
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Start a task: S = S_init, H = [], n = 0, F = 0, delta = None, calib = [] (SPEC.md "State")."""
        self._interval: int = self._config.s_init
        self._history: list[float] = []
        self._n: int = 0
        self._activations: int = 0
        self._threshold: Optional[float] = None
        self._calib: list[float] = []
        self._merge_due: bool = False

    @property
    def config(self) -> ControllerConfig:
        """The (immutable) configuration."""
        return self._config

    @property
    def interval(self) -> int:
        """The scheduled merge interval S, in steps."""
        return self._interval

    @property
    def threshold(self) -> Optional[float]:
        """The forgetting threshold delta (a loss value), None until calibration ends."""
        return self._threshold

    @property
    def activations(self) -> int:
        """Forgetting activations F since the last merge (or task start)."""
        return self._activations

    @property
    def steps_since_merge(self) -> int:
        """n: optimizer steps observed since the last merge (or task start)."""
        return self._n

    @property
    def history(self) -> tuple[float, ...]:
        """A copy of the learning-signal history H = (Lambda_1, ..., Lambda_b)."""
        return tuple(self._history)

    @property
    def merge_due(self) -> bool:
        """True between an ``observe()`` that returned True and the ``on_merge()`` call."""
        return self._merge_due

    @property
    def calibration_length(self) -> int:
        """Steps over which the threshold is calibrated after a merge, for the current S.

        paper: ``c = max(1, floor(2*S/3))`` (SPEC.md observe step 1 [decision]);
        reference_code: ``floor(2*S/3) + 1``.
        """
        base = (2 * self._interval) // 3
        if self._config.variant == REFERENCE_CODE:
            return base + 1
        return max(1, base)

    # ------------------------------------------------------------------ steps
    def observe(self, history_loss: float) -> bool:
        """Record the history loss of one optimizer step; return True iff a merge is due now.

        ``history_loss`` is the mean loss (a loss value) of one memory batch,
        measured after the optimizer step, without gradient and with dropout off.
        Implements SPEC.md observe steps 1-3 (paper section 3.1, "forgetting
        signal" and "overall workflow"):

        1. ``n += 1``; ``c`` = :attr:`calibration_length`.
        2. ``n <= c``: the loss joins the calibration; at ``n == c`` the threshold
           becomes ``gamma_forget * mean(calib)``. Afterwards a loss strictly above
           the threshold counts one activation (``F += 1``).
        3. paper: merge iff ``(n < S and F >= F_max) or (n >= S and F >= 1) or
           n >= 2S``; -LS: iff ``F >= 1``; -FS: iff ``n >= S``; reference_code:
           the first two rules, with one activation forced at ``n == 2S``.

        Raises:
            ValueError: the loss is NaN or infinite.
            RuntimeError: a merge is due and :meth:`on_merge` was not called.
        """
        loss = _finite_float("history_loss", history_loss)
        if self._merge_due:
            raise RuntimeError(
                "a merge is due: call on_merge() before the next observe()"
            )
        cfg = self._config
        self._n += 1
        n = self._n
        c = self.calibration_length
        if n <= c:
            self._calib.append(loss)
            if n == c:
                self._threshold = cfg.gamma_forget * (math.fsum(self._calib) / len(self._calib))
        elif loss > self._threshold:  # type: ignore[operator]
            self._activations += 1
        s = self._interval
        if cfg.variant == REFERENCE_CODE and n >= 2 * s and self._activations == 0:
            self._activations = 1  # forced activation at 2S
        self._merge_due = self._merge_rule()
        return self._merge_due

    def _merge_rule(self) -> bool:
        cfg = self._config
        n, s, f = self._n, self._interval, self._activations
        if not cfg.use_forgetting_signal:
            return n >= s
        if not cfg.use_learning_signal:
            return f >= 1
        early = n < s and f >= cfg.f_max
        on_time = n >= s and f >= 1
        if cfg.variant == REFERENCE_CODE:
            return early or on_time
        return early or on_time or n >= 2 * s

    def on_merge(self, l1_change: float) -> MergePlan:
        """Record the merge that :meth:`observe` asked for; return its :class:`MergePlan`.

        ``l1_change`` is ``sum |theta_now - theta_anchor|`` over all trainable
        parameters (see :func:`aimmerging.fusion.l1_change`). Implements SPEC.md
        on_merge steps 1-7 (paper eq. 3, 4 and 8):

        1. ``S' = n``; ``Lambda = l1 / S'`` (reference_code: ``l1 / S``); H += [Lambda].
        2. Trend window over the last ``min(L_w, len(H)-1)`` pairs of H: ``up``
           rises, ``down`` falls (reference_code: the last pair only).
        3. ``P_new = up / pairs`` (0.5 with no pair, or under -LS);
           ``P_past = min(F, F_max) / F_max`` (0.5 under -FS);
           ``alpha = P / (P_new + P_past)``, 0.5 / 0.5 when both are 0;
           reference_code: the weight table; ``fixed_alphas`` override.
        4. ``rehearsal_steps = max(1, ceil(S'/2))`` (reference_code: the new S).
        5. Interval update once ``len(H) > L_w`` (reference_code: ``> 3``).
        6. ``n = 0, F = 0, delta = None, calib = []``.

        Raises:
            RuntimeError: no merge is due (the last ``observe()`` did not return True).
            ValueError: ``l1_change`` is NaN, infinite or negative.
        """
        if not self._merge_due:
            raise RuntimeError(
                "no merge is due: call on_merge() only right after observe() returned True"
            )
        l1 = _finite_float("l1_change", l1_change)
        if l1 < 0:
            raise ValueError(f"l1_change must be >= 0, got {l1!r}")
        cfg = self._config
        s = self._interval
        s_run = self._n
        f = self._activations
        threshold = self._threshold

        if cfg.variant == REFERENCE_CODE:
            lam = l1 / s
            self._history.append(lam)
            up, down = self._last_pair_trend()
            alpha_new, alpha_past = self._reference_table(f, s)
            next_s = self._reference_update(s)
            rehearsal = next_s
            main_opt = True
        else:
            lam = l1 / s_run
            self._history.append(lam)
            up, down, pairs = self._window_trend()
            alpha_new, alpha_past = self._paper_alphas(up, pairs, f)
            next_s = self._paper_update(s, up, down)
            rehearsal = max(1, math.ceil(s_run / 2))
            main_opt = False
        if cfg.fixed_alphas is not None:
            alpha_new, alpha_past = cfg.fixed_alphas

        self._interval = next_s
        self._n = 0
        self._activations = 0
        self._threshold = None
        self._calib = []
        self._merge_due = False
        return MergePlan(
            alpha_new=float(alpha_new),
            alpha_past=float(alpha_past),
            rehearsal_steps=int(rehearsal),
            interval_run=s_run,
            lambda_=lam,
            next_interval=next_s,
            up=up,
            down=down,
            activations=f,
            threshold=threshold,
            rehearsal_uses_main_optimizer=main_opt,
        )

    # ------------------------------------------------------------ paper rules
    def _window_trend(self) -> tuple[int, int, int]:
        h = self._history
        pairs = min(self._config.window, len(h) - 1)
        up = down = 0
        for i in range(len(h) - pairs, len(h)):
            if h[i] > h[i - 1]:
                up += 1
            elif h[i] < h[i - 1]:
                down += 1
        return up, down, pairs

    def _paper_alphas(self, up: int, pairs: int, f: int) -> tuple[float, float]:
        cfg = self._config
        if not cfg.use_learning_signal or pairs == 0:
            p_new = 0.5
        else:
            p_new = up / pairs
        if not cfg.use_forgetting_signal:
            p_past = 0.5
        else:
            p_past = min(f, cfg.f_max) / cfg.f_max
        total = p_new + p_past
        if total == 0:
            return 0.5, 0.5
        return p_new / total, p_past / total

    def _paper_update(self, s: int, up: int, down: int) -> int:
        cfg = self._config
        if not cfg.use_learning_signal or len(self._history) <= cfg.window:
            return s
        gamma_up, gamma_down = gammas_for(s)
        if up > down:
            return max(cfg.s_min, round_half_up(s / gamma_down))
        if down > up:
            return min(cfg.s_max, round_half_up(s * gamma_up))
        return s

    # --------------------------------------------------- reference_code rules
    def _last_pair_trend(self) -> tuple[int, int]:
        h = self._history
        if len(h) < 2:
            return 0, 0
        if h[-1] > h[-2]:
            return 1, 0
        if h[-1] < h[-2]:
            return 0, 1
        return 0, 0

    @staticmethod
    def _reference_table(f: int, s: int) -> tuple[float, float]:
        if f > 1:
            return (0.5, 0.5) if s <= REFERENCE_TABLE_SPLIT else (0.4, 0.6)
        return (0.6, 0.4) if s <= REFERENCE_TABLE_SPLIT else (0.5, 0.5)

    def _reference_update(self, s: int) -> int:
        cfg = self._config
        h = self._history
        if len(h) <= REFERENCE_COLD_START:
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

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Return the full state as JSON-serialisable plain types (for checkpoints).

        Includes the config, so :meth:`load_state_dict` can refuse a mismatch.
        """
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "config": self._config.to_dict(),
            "interval": self._interval,
            "history": list(self._history),
            "steps_since_merge": self._n,
            "activations": self._activations,
            "threshold": self._threshold,
            "calibration": list(self._calib),
            "merge_due": self._merge_due,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (possibly through JSON) exactly.

        Raises:
            ValueError: the dict is not a controller state, has another version,
                was saved with a different config, or holds inconsistent values.
        """
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError("not a MergeController state_dict")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"unsupported MergeController state version {state.get('version')!r}"
            )
        try:
            saved = ControllerConfig.from_dict(state["config"]).to_dict()
        except (KeyError, TypeError, ConfigError) as exc:
            raise ValueError(f"bad config in MergeController state: {exc}") from None
        if saved != self._config.to_dict():
            raise ValueError(
                f"MergeController state was saved with config {saved}, "
                f"this controller has {self._config.to_dict()}"
            )
        try:
            interval = state["interval"]
            n = state["steps_since_merge"]
            f = state["activations"]
            threshold = state["threshold"]
            history = [float(x) for x in state["history"]]
            calib = [float(x) for x in state["calibration"]]
            merge_due = state["merge_due"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed MergeController state: {exc!r}") from None
        cfg = self._config
        if not (_is_int(interval) and cfg.s_min <= interval <= cfg.s_max):
            raise ValueError(f"state interval {interval!r} outside [s_min, s_max]")
        if not (_is_int(n) and n >= 0 and _is_int(f) and f >= 0):
            raise ValueError("state steps_since_merge / activations must be ints >= 0")
        if not isinstance(merge_due, bool):
            raise ValueError("state merge_due must be a bool")
        if threshold is not None:
            threshold = float(threshold)
        self._interval = interval
        self._history = history
        self._n = n
        self._activations = f
        self._threshold = threshold
        self._calib = calib
        self._merge_due = merge_due

    def __repr__(self) -> str:
        return (
            f"MergeController(variant={self._config.variant!r}, S={self._interval}, "
            f"n={self._n}, F={self._activations}, threshold={self._threshold}, "
            f"len(H)={len(self._history)})"
        )
