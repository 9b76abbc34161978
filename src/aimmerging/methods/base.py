"""The method interface: named hooks that the continual-learning loop calls.

A method changes what is trained on (``train_examples``), adds a loss term
(``extra_loss``), acts after every optimizer step (``after_step``: AIMMerging's
controller and fusion) and after every task (``after_task``). A method with several
adapters builds them in ``prepare_model`` and writes them in ``save_adapter``. The loop
knows nothing of AIMMerging; a new method is one new file registered in
:mod:`aimmerging.methods`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ..loop import ContinualTrainer


@dataclass(frozen=True)
class Stage:
    """One training stage: the tasks trained on, the tasks evaluated, the matrix column filled."""

    index: int
    name: str
    train_tasks: tuple[int, ...]
    eval_tasks: tuple[int, ...]
    column: int


class Method:
    """Base method: sequential LoRA fine-tuning with no memory (``seq_lora``)."""

    name = "seq_lora"
    #: whether the method needs the history loss (one memory batch after every step)
    needs_history_loss = False
    #: whether a new stage starts from the base model (``single_task``)
    resets_adapter = False

    def __init__(self, trainer: "ContinualTrainer") -> None:
        self.trainer = trainer
        self.cfg = trainer.cfg.method

    # --- stages -----------------------------------------------------------
    def stages(self, num_tasks: int, eval_all: bool) -> list[Stage]:
        """One stage per task; evaluate the tasks seen so far (or all tasks)."""
        names = self.trainer.task_names
        return [Stage(k, names[k], (k,), tuple(range(num_tasks if eval_all else k + 1)), k)
                for k in range(num_tasks)]

    # --- hooks -----------------------------------------------------------
    def prepare_model(self, net: torch.nn.Module) -> None:
        """Called once on the PEFT model, before the optimizers are made from its trainable
        parameters: a method with several adapters (or a router) adds them here."""

    def train_examples(self, stage: Stage) -> list:
        """The examples trained on in ``stage`` (default: the stage's own tasks)."""
        out = []
        for t in stage.train_tasks:
            out.extend(self.trainer.tasks[t].train)
        return out

    def before_task(self, stage: Stage) -> None:
        """Called before the first step of a stage (after the optimizer state was reset)."""

    def extra_loss(self, model: torch.nn.Module) -> Optional[torch.Tensor]:
        """A loss term added to the task loss (scalar tensor), or None."""
        return None

    def after_step(self, stage: Stage, step: int, train_loss: float) -> None:
        """Called after each optimizer step (``step`` counts from 1 inside the stage)."""

    def on_gradients(self, model: torch.nn.Module, kind: str) -> None:
        """Called after backward, before an optimizer step; ``kind`` is "new" or "rehearsal"."""

    def after_task(self, stage: Stage) -> None:
        """Called after the last step of a stage, before evaluation: the replay memory grows."""
        for t in stage.train_tasks:
            task = self.trainer.tasks[t]
            if task.info.name not in self.trainer.memory.tasks:
                self.trainer.memory.add_task(task.info.name, task.train)

    def save_adapter(self, net: torch.nn.Module, folder: Path) -> None:
        """Write the stage's result into ``folder`` (new and empty; the run folder's
        ``adapters/stageNN_<task>/`` once complete): one PEFT adapter by default."""
        net.save_pretrained(str(folder), safe_serialization=True)

    # --- checkpoint ---------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-serialisable state (restored on resume)."""
        return {}

    def tensor_state(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint (saved with safetensors)."""
        return {}

    def load_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` and :meth:`tensor_state` returned; called before the
        trainable parameters are restored, so that a method can first choose which are trainable."""
