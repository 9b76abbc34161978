"""The merging engine: what AIMMerging does after an optimizer step, for any training loop.

Two front doors drive the same engine: the continual-learning loop of ``aimmerging run``
(:class:`aimmerging.methods.merging.MergingMethod`) and a user's own ``transformers.Trainer``
(:class:`aimmerging.callback.AIMMergingCallback`). Neither measures a history loss, rehearses
or fuses on its own.

- :class:`MemoryPasses`: the passes over the replay memory: seeded memory batches, the
  history loss (SPEC.md: mean loss on one memory batch, no gradient, dropout off, averaged
  over processes) and the rehearsal (SPEC.md "Rehearsal-based knowledge fusion", step 2).
- :class:`MergingEngine`: the :class:`~aimmerging.controller.MergeController`, the anchor
  theta_anchor, the importance tracker of element-wise fusion and the fusion itself:
  ``before_task(model)`` at a task's start, ``after_step(model, step, lr_used)`` after every
  optimizer step, returning the merge record (a ``merge_trace.csv`` row) when it merged.

Both reach the training loop through a *host* (:class:`Host`): the module forward passes go
through, a loss on a list of memory items, backward, clipping, an optimizer step and the mean
over processes. The engine knows nothing of run folders, the command line or Trainer internals.

Every rank of a multi-process run takes the same decisions: memory batches are seeded by
``(seed, kind, key)`` alone and each rank takes its shard of one batch of ``batch_size *
world`` items; the history loss and the l1 change are averaged over ranks before the
controller sees them.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections import defaultdict
from typing import Callable, Optional, Protocol

import torch

from .controller import ControllerConfig, MergeController
from .fusion import fuse_, fuse_elementwise_, l1_change, snapshot
from .importance import ImportanceTracker
from .monitoring import (history_autocast, history_batch_size, history_key, history_shares_prefix,
                         set_training)

__all__ = ["Host", "MemoryPasses", "MergingEngine", "seed_key"]


def seed_key(*parts) -> int:
    """A stable 32-bit seed from any parts (not Python's randomised ``hash``)."""
    return zlib.crc32(":".join(str(p) for p in parts).encode())


class Host(Protocol):
    """What the engine needs from a training loop (implemented by
    :class:`aimmerging.loop.ContinualTrainer` and by the Trainer callback)."""

    #: the module forward passes go through (possibly DDP-wrapped); ``train()``/``eval()`` on it
    model: torch.nn.Module
    #: number of processes
    world: int

    def shard(self, items: list) -> list:
        """This rank's share of a batch that every rank drew alike."""

    def loss_on(self, items: list, share_prefix: Optional[bool] = None) -> torch.Tensor:
        """Mean token loss (0-dim tensor) of a list of memory items under the model."""

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of ``loss``; the gradients end up averaged over ranks."""

    def clip(self, optimizer) -> None:
        """Clip the gradients that ``optimizer`` is about to apply."""

    def step(self, optimizer) -> None:
        """One step of ``optimizer``."""

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over ranks (called only with several processes)."""

    def reduce_mean(self, value: float) -> float:
        """The mean of a Python float over ranks (the value itself on one process)."""


class MemoryPasses:
    """Memory batches, the history loss and the rehearsal on a replay memory.

    Args:
        cfg: a :class:`~aimmerging.config.RunConfig`; read: ``seed``, ``train.batch_size``
            (rehearsal batches) and the ``method.history_*`` settings (:mod:`.monitoring`).
        memory: the replay memory: anything with ``len()`` and ``sample_batch(n, rng)``
            (:class:`~aimmerging.memory.ReplayMemory`).
        host: the training loop (:class:`Host`).
        timing, counters: dicts the seconds (``monitor_seconds``, ``rehearsal_seconds``) and
            counts (``rehearsal_steps``) add up in (new ones when None).
    """

    def __init__(self, cfg, memory, host: Host, timing: Optional[dict] = None,
                 counters: Optional[dict] = None) -> None:
        self.cfg, self.memory, self.host = cfg, memory, host
        self.timing = defaultdict(float) if timing is None else timing
        self.counters = defaultdict(int) if counters is None else counters

    def memory_batch(self, kind: str, key: tuple, batch_size: int) -> Optional[list]:
        """A memory batch seeded by (seed, kind, key), the same on every rank: ``batch_size * world``
        items, of which this rank takes its shard; None when the memory is empty."""
        if len(self.memory) == 0:
            return None
        rng = random.Random(seed_key(self.cfg.seed, kind, *key))
        return self.host.shard(self.memory.sample_batch(batch_size * self.host.world, rng))

    @torch.no_grad()
    def history_loss(self, key: tuple) -> float:
        """Mean loss on the memory batch of ``key`` (:func:`~aimmerging.monitoring.history_key`),
        no gradient, dropout off; averaged over ranks (SPEC.md). NaN when the memory is empty.

        Raises:
            ValueError: the loss is not finite.
        """
        t0 = time.perf_counter()
        items = self.memory_batch("history", key, history_batch_size(self.cfg))
        if items is None:
            return float("nan")
        model = self.host.model
        set_training(model, False)        # eval(): dropout off (one flat pass over the flags)
        with history_autocast(self.cfg.method.history_precision, model):
            loss = self.host.loss_on(items, history_shares_prefix(self.cfg, model)).detach()
        set_training(model, True)
        if self.host.world > 1:
            loss = self.host.reduce(loss.float())
        self.timing["monitor_seconds"] += time.perf_counter() - t0
        value = float(loss)
        if not math.isfinite(value):
            raise ValueError(f"history loss is {value}")
        return value

    def rehearse(self, n_steps: int, key: tuple, lr: float, optimizer,
                 on_gradients: Optional[Callable[[], None]] = None) -> None:
        """``n_steps`` steps of ``optimizer`` on memory batches of ``train.batch_size`` (SPEC.md
        fusion step 2), each seeded by ``key + (r,)``.

        ``lr`` is the learning rate that the merge's main step used (never the schedule's next
        rate, which is 0 after a task's last step): it is set on ``optimizer`` for the rehearsal
        and the optimizer's own rates are put back afterwards. ``on_gradients`` is called after
        each backward and clipping, before the step (the importance tracker of +IFM).
        """
        t0 = time.perf_counter()
        rates = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = lr
        try:
            for r in range(n_steps):
                items = self.memory_batch("rehearsal", key + (r,), self.cfg.train.batch_size)
                if items is None:
                    break
                loss = self.host.loss_on(items)
                self.host.backward(loss)
                self.host.clip(optimizer)
                if on_gradients is not None:
                    on_gradients()
                self.host.step(optimizer)
                optimizer.zero_grad(set_to_none=True)
        finally:
            for group, rate in zip(optimizer.param_groups, rates):
                group["lr"] = rate
        self.counters["rehearsal_steps"] += n_steps
        self.timing["rehearsal_seconds"] += time.perf_counter() - t0


class MergingEngine:
    """AIMMerging's controller, anchor and fusion after each optimizer step (SPEC.md).

    Args:
        passes: the :class:`MemoryPasses` (memory, host, timings); ``passes.cfg.method``
            gives ``skip_idle_rehearsal``, ``ifm_beta`` and ``log_history_loss``.
        controller_config: the merge controller's settings (ablations and the
            ``reference_code`` variant are its flags).
        rehearsal_optimizer: the rehearsal's own AdamW over the trainable parameters; its state
            is cleared at every task's start and lives for the whole task.
        importance_fusion: element-wise importance weights instead of the global pair
            (``aimmerging_ifm``, ``recurrent_kif``).
        traces: a :class:`~aimmerging.traces.Traces`: every merge record is appended to
            ``traces.merges`` (none kept when None).

    Attributes:
        task: ``(index, name)`` of the current task (0-based index), used in the seeds of the
            memory batches and in the merge records.
        signal: after :meth:`after_step`, this step's ``history_loss``, ``threshold`` and
            ``interval`` (``signals.csv`` columns); empty while the memory is empty.
    """

    def __init__(self, passes: MemoryPasses, controller_config: ControllerConfig,
                 rehearsal_optimizer, importance_fusion: bool = False, traces=None) -> None:
        self.passes = passes
        self.method_cfg = passes.cfg.method
        self.controller_config = controller_config
        self.controller = MergeController(controller_config)
        self.rehearsal_optimizer = rehearsal_optimizer
        self.importance_fusion = bool(importance_fusion)
        self.traces = traces
        # the history loss is what the forgetting signal watches
        self.monitor = controller_config.use_forgetting_signal or self.method_cfg.log_history_loss
        self.anchor: dict[str, torch.Tensor] = {}
        self.importance: Optional[ImportanceTracker] = None
        self.task: tuple[int, str] = (0, "")
        self.signal: dict = {}

    def before_task(self, model: torch.nn.Module) -> None:
        """A task starts (set :attr:`task` first): reset the controller, take the anchor from
        ``model``'s trainable parameters, clear the rehearsal optimizer's state."""
        self.controller.reset()
        self.anchor = snapshot(model)
        if self.importance_fusion:
            self.importance = ImportanceTracker(self.method_cfg.ifm_beta)
        if self.rehearsal_optimizer is not None:
            self.rehearsal_optimizer.state.clear()

    def on_gradients(self, model: torch.nn.Module, kind: str) -> None:
        """After backward, before an optimizer step: ``kind`` "new" (a main step) or
        "rehearsal"; feeds the importance tracker of element-wise fusion."""
        if self.importance is not None and len(self.passes.memory) > 0:
            self.importance.update(model, kind)

    def after_step(self, model: torch.nn.Module, step: int, lr_used: float,
                   main_optimizer=None) -> Optional[dict]:
        """After optimizer step ``step`` (from 1 in the task) that ran at ``lr_used``: measure the
        history loss, drive the controller and, at a merge, rehearse and fuse ``model``'s
        trainable parameters in place. Returns the merge record, or None.

        Does nothing while the replay memory is empty (the first task: plain training).
        ``main_optimizer`` is the training loop's optimizer, which the ``reference_code``
        variant rehearses with.

        Raises:
            ValueError: a non-finite history loss or l1 change.
        """
        self.signal = {}
        if len(self.passes.memory) == 0:
            return None
        ctl = self.controller
        start = step - ctl.steps_since_merge      # the interval's first step
        key = history_key(self.passes.cfg, self.task[0], step, start)
        loss = self.passes.history_loss(key) if self.monitor else 0.0
        due = ctl.observe(loss)
        self.signal = {"history_loss": loss if self.monitor else None,
                       "threshold": ctl.threshold, "interval": ctl.interval}
        if not due:
            return None
        record = self._merge(model, step, lr_used, main_optimizer)
        self.signal["interval"] = ctl.interval
        return record

    def _merge(self, model: torch.nn.Module, step: int, lr: float, main_optimizer) -> dict:
        passes, timing = self.passes, self.passes.timing
        index, name = self.task
        t0 = time.perf_counter()
        l1 = passes.host.reduce_mean(l1_change(model, self.anchor))
        plan = self.controller.on_merge(l1)
        theta_new = snapshot(model)
        rehearsal_before = timing["rehearsal_seconds"]
        skipped = (plan.skip_rehearsal and self.method_cfg.skip_idle_rehearsal
                   and not self.importance_fusion)
        if skipped:
            passes.counters["rehearsal_steps_skipped"] += plan.rehearsal_steps
        else:
            optimizer = main_optimizer if plan.rehearsal_uses_main_optimizer else self.rehearsal_optimizer
            if optimizer is None:
                raise ValueError("the rehearsal of the reference_code variant needs the main "
                                 "optimizer (main_optimizer=)")
            passes.rehearse(plan.rehearsal_steps, (index, step), lr, optimizer,
                            lambda: self.on_gradients(model, "rehearsal"))
        if self.importance is not None:
            fuse_elementwise_(model, self.anchor, theta_new, self.importance.new_weight())
            self.importance.reset_past()
        else:
            fuse_(model, self.anchor, theta_new, plan.alpha_new, plan.alpha_past)
        self.anchor = snapshot(model)
        spent = time.perf_counter() - t0
        timing["merge_seconds"] += spent - (timing["rehearsal_seconds"] - rehearsal_before)
        passes.counters["merges"] += 1
        record = {
            "task": name, "stage": index + 1, "step": step,
            "interval_run": plan.interval_run, "next_interval": plan.next_interval,
            "lambda": plan.lambda_, "threshold": plan.threshold, "activations": plan.activations,
            "alpha_new": plan.alpha_new, "alpha_past": plan.alpha_past,
            "rehearsal_steps": plan.rehearsal_steps, "rehearsal_skipped": int(skipped),
            "l1_change": l1}
        if self.traces is not None:
            self.traces.merges.append(record)
        return record

    # --- checkpoint ---------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-serialisable state: the controller's (and the importance tracker's)."""
        out = {"controller": self.controller.state_dict()}
        if self.importance is not None:
            out["importance"] = self.importance.state_dict()
        return out

    def tensor_state(self) -> dict[str, torch.Tensor]:
        """The anchor (``anchor.<parameter>``) and the importance tensors, for safetensors."""
        out = {f"anchor.{k}": v for k, v in self.anchor.items()}
        if self.importance is not None:
            out.update(self.importance.tensor_state())
        return out

    def load_state_dict(self, state: dict, tensors: dict[str, torch.Tensor], device) -> None:
        """Restore what :meth:`state_dict` and :meth:`tensor_state` returned, tensors on ``device``."""
        self.controller.load_state_dict(state["controller"])
        self.anchor = {k[len("anchor."):]: v.to(device) for k, v in tensors.items()
                       if k.startswith("anchor.")}
        if self.importance_fusion:
            self.importance = ImportanceTracker(self.method_cfg.ifm_beta)
            self.importance.load_state(state.get("importance", {}), tensors, device)
