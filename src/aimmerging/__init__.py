"""aimmerging: continual learning of language models with Adaptive Iterative Model Merging.

Implements AIMMerging (Feng et al., EMNLP 2025) as specified in SPEC.md, with the
baselines, benchmarks, metrics and plots around it.

The public Python API (docs/python.md) is importable from here; each name is imported on
first use, so that ``import aimmerging`` (and the command line's start) loads no torch:

- runs: :func:`run`, :func:`compare`, :func:`load_config`, :class:`RunConfig`;
- a user's own Trainer: :class:`AIMMergingCallback`, :class:`MergingEngine`;
- the parts: :class:`MergeController`, :class:`ControllerConfig`, :class:`MergePlan`,
  :func:`fuse_`, :func:`snapshot`, :func:`l1_change`, :class:`ReplayMemory`;
- errors: :class:`AimmergingError` and its subclasses :class:`ConfigError`,
  :class:`DataError`, :class:`TrainingError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "run": "api", "compare": "compare",
    "load_config": "config", "RunConfig": "config",
    "MergeController": "controller", "ControllerConfig": "controller", "MergePlan": "controller",
    "fuse_": "fusion", "snapshot": "fusion", "l1_change": "fusion",
    "ReplayMemory": "memory",
    "AIMMergingCallback": "callback",
    "MergingEngine": "engine",
    "AimmergingError": "errors", "ConfigError": "errors", "DataError": "errors",
    "TrainingError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aimmerging' has no attribute {name!r}")
    mod = importlib.import_module(f"{__name__}.{module}")
    # ``compare`` is the submodule itself, callable (aimmerging.compare(...) runs compare_runs)
    return mod if name == module else getattr(mod, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from . import compare  # noqa: F401
    from .api import run  # noqa: F401
    from .callback import AIMMergingCallback  # noqa: F401
    from .config import RunConfig, load_config  # noqa: F401
    from .controller import ControllerConfig, MergeController, MergePlan  # noqa: F401
    from .engine import MergingEngine  # noqa: F401
    from .errors import AimmergingError, ConfigError, DataError, TrainingError  # noqa: F401
    from .fusion import fuse_, l1_change, snapshot  # noqa: F401
    from .memory import ReplayMemory  # noqa: F401
