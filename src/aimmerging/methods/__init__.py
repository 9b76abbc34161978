"""Continual-learning methods, selected by ``method.name`` (one small module per family)."""

from __future__ import annotations

from ..errors import ConfigError, did_you_mean
from .base import Method, Stage
from .baselines import EWC, MTL, Replay, SingleTask
from .inc_lora import IncLoRA
from .merging import MergingMethod, make_merging
from .moe_lora import MoELoRA
from .o_lora import OLoRA
from .single_merge import SingleMerge

MERGING_METHODS = ("aimmerging", "aimmerging_no_ls", "aimmerging_no_fs", "aimmerging_mgm",
                   "aimmerging_ifm", "aimmerging_reference", "fixed_interval", "recurrent_kif")
OTHER_METHODS = {"seq_lora": Method, "replay": Replay, "ewc": EWC, "single_task": SingleTask,
                 "mtl": MTL, "inc_lora": IncLoRA, "o_lora": OLoRA, "moe_lora": MoELoRA,
                 "single_merge": SingleMerge}


def build_method(name: str, trainer) -> Method:
    """The method object for ``name``; raises ConfigError for an unknown name."""
    if name in MERGING_METHODS:
        return make_merging(name, trainer)
    if name in OTHER_METHODS:
        return OTHER_METHODS[name](trainer)
    known = ", ".join(sorted(MERGING_METHODS + tuple(OTHER_METHODS)))
    raise ConfigError(f"method.name: unknown method {name!r}"
                      f"{did_you_mean(name, MERGING_METHODS + tuple(OTHER_METHODS))}; known: {known}")


__all__ = ["Method", "Stage", "build_method", "MERGING_METHODS", "MergingMethod"]
