"""Baselines driven by the same loop (paper section 4 "Baselines").

- ``seq_lora``: one LoRA trained through the tasks, no memory (:class:`Method`).
- ``replay``: LoRAReplay, each task's training data joined with the replay memory.
- ``ewc``: an EWC penalty on the LoRA parameters, diagonal Fisher of each finished task.
- ``single_task``: each task trained alone from the base model (the a0 scores of FWT).
- ``mtl``: joint training on all tasks' data (the upper bound).
"""

from __future__ import annotations

import random

import torch

from ..fusion import snapshot, trainable_parameters
from .base import Method, Stage


class Replay(Method):
    """LoRAReplay: train on D_k joined with the memory M_<k."""

    name = "replay"

    def train_examples(self, stage: Stage) -> list:
        return super().train_examples(stage) + self.trainer.memory.examples()


class EWC(Method):
    """Elastic weight consolidation on the LoRA parameters (Kirkpatrick et al., 2017).

    Penalty: ``ewc_lambda / 2 * sum_i F_i (theta_i - theta*_i)^2``, with F the sum of the
    diagonal Fishers (mean squared gradients over ``ewc_fisher_batches`` training
    batches) of the finished tasks and theta* the parameters after the last task.
    """

    name = "ewc"

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self.fisher: dict[str, torch.Tensor] = {}
        self.star: dict[str, torch.Tensor] = {}

    def extra_loss(self, model: torch.nn.Module):
        if not self.fisher:
            return None
        total = None
        for name, p in trainable_parameters(model):
            term = (self.fisher[name] * (p.float() - self.star[name]) ** 2).sum()
            total = term if total is None else total + term
        return 0.5 * self.cfg.ewc_lambda * total

    def after_task(self, stage: Stage) -> None:
        tr = self.trainer
        examples = super().train_examples(stage)
        rng = random.Random(f"{tr.cfg.seed}:ewc:{stage.index}")
        params = trainable_parameters(tr.net)
        fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
        n_batches = self.cfg.ewc_fisher_batches
        for _ in range(n_batches):
            batch = rng.sample(examples, min(len(examples), tr.cfg.train.batch_size))
            loss = tr.loss_on(tr.shard(batch))
            tr.accelerator.backward(loss)
            for n, p in params:
                if p.grad is not None:
                    fisher[n] += p.grad.detach().float() ** 2 / n_batches
            tr.model.zero_grad(set_to_none=True)
        for n, f in fisher.items():
            self.fisher[n] = self.fisher[n] + f if n in self.fisher else f
        self.star = snapshot(tr.net)
        super().after_task(stage)

    def tensor_state(self) -> dict[str, torch.Tensor]:
        return {**{f"fisher.{k}": v for k, v in self.fisher.items()},
                **{f"star.{k}": v for k, v in self.star.items()}}

    def load_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        device = self.trainer.accelerator.device
        self.fisher = {k[7:]: v.to(device) for k, v in tensors.items() if k.startswith("fisher.")}
        self.star = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("star.")}


class SingleTask(Method):
    """Each task trained alone from the base model; gives a0[i] (SPEC.md "Metrics")."""

    name = "single_task"
    resets_adapter = True

    def stages(self, num_tasks: int, eval_all: bool) -> list[Stage]:
        names = self.trainer.task_names
        return [Stage(k, names[k], (k,), (k,), k) for k in range(num_tasks)]


class MTL(Method):
    """Multi-task learning: one stage on all tasks' data, evaluated on all tasks."""

    name = "mtl"

    def stages(self, num_tasks: int, eval_all: bool) -> list[Stage]:
        every = tuple(range(num_tasks))
        return [Stage(0, "all_tasks", every, every, num_tasks - 1)]
