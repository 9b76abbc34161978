"""The :class:`~aimmerging.callback.AIMMergingCallback`'s host inside a Trainer: what the
merging engine (:class:`aimmerging.engine.MergingEngine`) needs from its training loop, the
memory batches' loss, backward, clipping, the optimizer step and the reductions over
processes, in plain torch (and ``torch.distributed`` under DDP)."""

from __future__ import annotations

from typing import Optional

import torch

from .callback_inputs import memory_batch
from .errors import TrainingError
from .losses import batch_loss
from .prefix import can_share_prefix, grouped_loss

__all__ = ["TrainerHost"]


class TrainerHost:
    """The engine's host (:class:`aimmerging.engine.Host`) inside a Trainer: plain torch, with
    ``torch.distributed`` under several processes (DDP through Accelerate or torchrun)."""

    def __init__(self, model, collate, is_seq2seq: bool, text: bool, max_grad_norm,
                 fp16: bool) -> None:
        import torch.distributed as dist

        self.model, self.collate, self.is_seq2seq, self.text = model, collate, is_seq2seq, text
        self.max_grad_norm = max_grad_norm
        self.distributed = dist.is_available() and dist.is_initialized()
        self.world = dist.get_world_size() if self.distributed else 1
        self.rank = dist.get_rank() if self.distributed else 0
        self.device = next(model.parameters()).device
        # fp16: the rehearsal's own loss scaling (the Trainer's scaler belongs to its optimizer)
        self.scaler = torch.amp.GradScaler(self.device.type) if fp16 else None

    def shard(self, items: list) -> list:
        return items if self.world == 1 else (items[self.rank::self.world] or items[:1])

    def loss_on(self, items: list, share_prefix: Optional[bool] = None) -> torch.Tensor:
        try:
            batch = memory_batch(self.collate, items, self.device)
        except ValueError as exc:
            raise TrainingError(f"AIMMergingCallback: {exc}") from None
        # shared prefixes need right-padded rows: the Encoder's batches
        if share_prefix and self.text and not self.is_seq2seq and can_share_prefix(self.model):
            return grouped_loss(self.model, batch)
        return batch_loss(self.model, batch, self.is_seq2seq)

    def _trainable(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        if self.world > 1:       # what DDP does for the Trainer's own steps
            import torch.distributed as dist

            for p in self._trainable():
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad.div_(self.world)

    def clip(self, optimizer) -> None:
        if self.max_grad_norm:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(list(self.model.parameters()), self.max_grad_norm)

    def step(self, optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.clone()
        dist.all_reduce(out)
        return out / self.world

    def reduce_mean(self, value: float) -> float:
        if self.world == 1:
            return value
        return float(self.reduce(torch.tensor([value], dtype=torch.float64, device=self.device)))
