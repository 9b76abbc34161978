"""Multi-round merging methods: AIMMerging (paper section 3), its ablations, the
fixed-interval baseline ("Fix Interval") and Recurrent-KIF.

After every optimizer step of task k >= 2 the method hands the model to the
:class:`~aimmerging.engine.MergingEngine`, which measures the history loss, asks the
:class:`~aimmerging.controller.MergeController` whether to merge, and at a merge runs the
rehearsal and the fusion of :mod:`aimmerging.fusion` (SPEC.md "Rehearsal-based knowledge
fusion"). The same engine runs in a Hugging Face Trainer (:mod:`aimmerging.callback`).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..controller import ControllerConfig
from ..engine import MergingEngine
from .base import Method, Stage


def controller_config(method_cfg, overrides: Optional[dict] = None) -> ControllerConfig:
    """The controller settings of a ``method`` config section, with ``overrides`` (the fields
    that a method name fixes, see :func:`merging_settings`). Raises ControllerConfigError."""
    c = method_cfg
    fields = dict(s_init=c.s_init, window=c.window, s_min=c.s_min, s_max=c.s_max,
                  gamma_forget=c.gamma_forget, f_max=c.f_max,
                  use_learning_signal=c.use_learning_signal,
                  use_forgetting_signal=c.use_forgetting_signal,
                  fixed_alphas=tuple(c.fixed_alphas) if c.fixed_alphas else None,
                  variant=c.variant)
    fields.update(overrides or {})
    return ControllerConfig(**fields)


class MergingMethod(Method):
    """Iterative merging driven by a merge controller (the loop's front door of the engine).

    Args:
        trainer: the :class:`~aimmerging.loop.ContinualTrainer`.
        overrides: ControllerConfig fields that the method name fixes (ablations).
        importance_fusion: element-wise importance weights instead of the global pair ("+IFM").
    """

    name = "aimmerging"

    def __init__(self, trainer, overrides: Optional[dict] = None,
                 importance_fusion: Optional[bool] = None) -> None:
        super().__init__(trainer)
        self.controller_config = controller_config(self.cfg, overrides)
        ifm = self.cfg.importance_fusion if importance_fusion is None else importance_fusion
        # the history loss is what the forgetting signal watches
        self.needs_history_loss = self.controller_config.use_forgetting_signal
        self._importance_fusion, self._engine = ifm, None

    @property
    def engine(self) -> MergingEngine:
        """The merging engine, made on first use: the trainer makes its optimizers and memory
        passes after the method (whose ``prepare_model`` may add adapters first)."""
        if self._engine is None:
            tr = self.trainer
            self._engine = MergingEngine(tr.passes, self.controller_config, tr.rehearsal_optimizer,
                                         self._importance_fusion, tr.writer.traces)
        return self._engine

    def before_task(self, stage: Stage) -> None:
        self.engine.task = (stage.index, stage.name)
        self.engine.before_task(self.trainer.net)

    def on_gradients(self, model: torch.nn.Module, kind: str) -> None:
        self.engine.on_gradients(model, kind)

    def after_step(self, stage: Stage, step: int, train_loss: float) -> None:
        tr = self.trainer
        self.engine.task = (stage.index, stage.name)      # also after a resume mid-task
        self.engine.after_step(tr.net, step, tr.signal["lr"], main_optimizer=tr.optimizer)
        tr.signal.update(self.engine.signal)

    # --- checkpoint ---------------------------------------------------------
    def state_dict(self) -> dict:
        return self.engine.state_dict()

    def tensor_state(self) -> dict[str, torch.Tensor]:
        return self.engine.tensor_state()

    def load_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.engine.load_state_dict(state, tensors, self.trainer.accelerator.device)


def merging_settings(name: str, method_cfg) -> tuple[dict, Optional[bool]]:
    """The ControllerConfig overrides and the element-wise fusion flag (None: the config's
    ``method.importance_fusion``) of a merging method name (``MERGING_METHODS``)."""
    fixed = {"use_learning_signal": False, "use_forgetting_signal": False,
             "fixed_alphas": (0.5, 0.5), "variant": "paper"}
    table = {
        "aimmerging": ({}, None),
        "aimmerging_no_ls": ({"use_learning_signal": False}, None),
        "aimmerging_no_fs": ({"use_forgetting_signal": False}, None),
        "aimmerging_mgm": ({"fixed_alphas": tuple(method_cfg.fixed_alphas or (0.5, 0.5))}, None),
        "aimmerging_ifm": ({}, True),
        "aimmerging_reference": ({"variant": "reference_code"}, None),
        "fixed_interval": (fixed, False),
        "recurrent_kif": (fixed, True),
    }
    return table[name]


def make_merging(name: str, trainer) -> MergingMethod:
    """The merging method for a method name (see :data:`aimmerging.config.METHOD_NAMES`)."""
    overrides, ifm = merging_settings(name, trainer.cfg.method)
    method = MergingMethod(trainer, overrides, ifm)
    method.name = name
    return method
