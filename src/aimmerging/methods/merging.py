"""Multi-round merging methods: AIMMerging (paper section 3), its ablations, the
fixed-interval baseline ("Fix Interval") and Recurrent-KIF.

After every optimizer step of task k >= 2 the method measures the history loss,
asks the :class:`~aimmerging.controller.MergeController` whether to merge, and at
a merge runs the rehearsal and the fusion of :mod:`aimmerging.fusion` (SPEC.md
"Rehearsal-based knowledge fusion").
"""

from __future__ import annotations

import time
from typing import Optional

import torch

from ..controller import ControllerConfig, MergeController
from ..fusion import fuse_, fuse_elementwise_, l1_change, snapshot
from ..monitoring import history_key
from .base import Method, Stage
from .importance import ImportanceTracker


class MergingMethod(Method):
    """Iterative merging driven by a merge controller.

    Args:
        trainer: the :class:`~aimmerging.loop.ContinualTrainer`.
        overrides: ControllerConfig fields that the method name fixes (ablations).
        importance_fusion: element-wise importance weights instead of the global pair ("+IFM").
    """

    name = "aimmerging"

    def __init__(self, trainer, overrides: Optional[dict] = None,
                 importance_fusion: Optional[bool] = None) -> None:
        super().__init__(trainer)
        c = self.cfg
        fields = dict(s_init=c.s_init, window=c.window, s_min=c.s_min, s_max=c.s_max,
                      gamma_forget=c.gamma_forget, f_max=c.f_max,
                      use_learning_signal=c.use_learning_signal,
                      use_forgetting_signal=c.use_forgetting_signal,
                      fixed_alphas=tuple(c.fixed_alphas) if c.fixed_alphas else None,
                      variant=c.variant)
        fields.update(overrides or {})
        self.controller_config = ControllerConfig(**fields)
        self.controller = MergeController(self.controller_config)
        self.importance_fusion = c.importance_fusion if importance_fusion is None else importance_fusion
        # the history loss is what the forgetting signal watches
        self.needs_history_loss = self.controller_config.use_forgetting_signal
        self.anchor: dict[str, torch.Tensor] = {}
        self.importance: Optional[ImportanceTracker] = None

    def before_task(self, stage: Stage) -> None:
        self.controller.reset()
        self.anchor = snapshot(self.trainer.net)
        if self.importance_fusion:
            self.importance = ImportanceTracker(self.cfg.ifm_beta)

    def on_gradients(self, model: torch.nn.Module, kind: str) -> None:
        if self.importance is not None and len(self.trainer.memory) > 0:
            self.importance.update(model, kind)

    def after_step(self, stage: Stage, step: int, train_loss: float) -> None:
        tr = self.trainer
        if len(tr.memory) == 0:          # task 1: plain LoRA training, no controller
            return
        monitor = self.needs_history_loss or self.cfg.log_history_loss
        start = step - self.controller.steps_since_merge      # the interval's first step
        loss = tr.history_loss(history_key(tr.cfg, stage.index, step, start)) if monitor else 0.0
        due = self.controller.observe(loss)
        tr.signal.update(history_loss=loss if monitor else None,
                         threshold=self.controller.threshold, interval=self.controller.interval)
        if due:
            self._merge(stage, step)

    def _merge(self, stage: Stage, step: int) -> None:
        tr, net = self.trainer, self.trainer.net
        t0 = time.perf_counter()
        l1 = tr.reduce_mean(l1_change(net, self.anchor))
        plan = self.controller.on_merge(l1)
        theta_new = snapshot(net)
        rehearsal_before = tr.timing["rehearsal_seconds"]
        skipped = (plan.skip_rehearsal and self.cfg.skip_idle_rehearsal
                   and not self.importance_fusion)
        if skipped:
            tr.counters["rehearsal_steps_skipped"] += plan.rehearsal_steps
        else:
            tr.rehearse(plan.rehearsal_steps, (stage.index, step), tr.signal["lr"],
                        plan.rehearsal_uses_main_optimizer)
        if self.importance is not None:
            fuse_elementwise_(net, self.anchor, theta_new, self.importance.new_weight())
            self.importance.reset_past()
        else:
            fuse_(net, self.anchor, theta_new, plan.alpha_new, plan.alpha_past)
        self.anchor = snapshot(net)
        spent = time.perf_counter() - t0
        tr.timing["merge_seconds"] += spent - (tr.timing["rehearsal_seconds"] - rehearsal_before)
        tr.counters["merges"] += 1
        tr.writer.traces.merges.append({
            "task": stage.name, "stage": stage.index + 1, "step": step,
            "interval_run": plan.interval_run, "next_interval": plan.next_interval,
            "lambda": plan.lambda_, "threshold": plan.threshold, "activations": plan.activations,
            "alpha_new": plan.alpha_new, "alpha_past": plan.alpha_past,
            "rehearsal_steps": plan.rehearsal_steps, "rehearsal_skipped": int(skipped),
            "l1_change": l1})
        tr.signal["interval"] = self.controller.interval

    # --- checkpoint ---------------------------------------------------------
    def state_dict(self) -> dict:
        out = {"controller": self.controller.state_dict()}
        if self.importance is not None:
            out["importance"] = self.importance.state_dict()
        return out

    def tensor_state(self) -> dict[str, torch.Tensor]:
        out = {f"anchor.{k}": v for k, v in self.anchor.items()}
        if self.importance is not None:
            out.update(self.importance.tensor_state())
        return out

    def load_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.controller.load_state_dict(state["controller"])
        device = self.trainer.accelerator.device
        self.anchor = {k[len("anchor."):]: v.to(device) for k, v in tensors.items()
                       if k.startswith("anchor.")}
        if self.importance_fusion:
            self.importance = ImportanceTracker(self.cfg.ifm_beta)
            self.importance.load_state(state.get("importance", {}), tensors, device)


def make_merging(name: str, trainer) -> MergingMethod:
    """The merging method for a method name (see :data:`aimmerging.config.METHOD_NAMES`)."""
    fixed = {"use_learning_signal": False, "use_forgetting_signal": False,
             "fixed_alphas": (0.5, 0.5), "variant": "paper"}
    table = {
        "aimmerging": ({}, None),
        "aimmerging_no_ls": ({"use_learning_signal": False}, None),
        "aimmerging_no_fs": ({"use_forgetting_signal": False}, None),
        "aimmerging_mgm": ({"fixed_alphas": tuple(trainer.cfg.method.fixed_alphas or (0.5, 0.5))},
                           None),
        "aimmerging_ifm": ({}, True),
        "aimmerging_reference": ({"variant": "reference_code"}, None),
        "fixed_interval": (fixed, False),
        "recurrent_kif": (fixed, True),
    }
    overrides, ifm = table[name]
    method = MergingMethod(trainer, overrides, ifm)
    method.name = name
    return method
