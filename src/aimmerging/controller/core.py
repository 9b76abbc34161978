"""The :class:`MergeController` state machine and the ``paper`` variant's rules.

Pure Python (no torch, no numpy). The ``reference_code`` rules live in
:mod:`aimmerging.controller.reference`; see :mod:`aimmerging.controller` for the
protocol and the decisions.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from aimmerging.errors import ConfigError

from .config import REFERENCE_CODE, ControllerConfig, _is_int
from .plan import MergePlan
from .reference import last_pair_trend, reference_table, reference_update

__all__ = ["GAMMA_SWITCH", "MergeController", "gammas_for", "round_half_up"]

#: SPEC.md gamma table: above this interval (in steps) gamma_up=1.5, gamma_down=2.
GAMMA_SWITCH = 64

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
           the threshold counts one activation (``F += 1``; reference_code: a loss at or
           above it).
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
        elif loss > self._threshold or (  # type: ignore[operator]
                cfg.variant == REFERENCE_CODE and loss == self._threshold):
            self._activations += 1   # reference_code counts l >= delta, the paper l > delta
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
        5. Interval update once ``len(H) > L_w`` (reference_code: once ``len(H) - 1 > 3``,
           from the 5th merge).
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
            up, down = last_pair_trend(self._history)
            alpha_new, alpha_past = reference_table(f, s)
            next_s = reference_update(cfg, self._history, s)
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
