"""Configuration of the merge controller: :class:`ControllerConfig` and its errors.

Pure Python (no torch, no numpy). See :mod:`aimmerging.controller` for the
decisions behind each field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Optional

from aimmerging.errors import ConfigError

__all__ = ["PAPER", "REFERENCE_CODE", "VARIANTS", "ControllerConfig", "ControllerConfigError"]

PAPER = "paper"
REFERENCE_CODE = "reference_code"
VARIANTS = (PAPER, REFERENCE_CODE)


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

