"""O-LoRA (Wang et al., 2023, "Orthogonal Subspace Learning for Language Model Continual
Learning"): IncLoRA whose new adapter is trained with two extra loss terms,

    lambda1 * sum_layers sum_{i<t} sum_jk |(A_i A_t^T)_jk|  +  lambda2 * sum_{P in {A_t, B_t}} ||P||_2

where A_t (r x d_in) is the new task's LoRA A and A_i the earlier tasks' (frozen). The first
term pushes the new task's input subspace orthogonal to the earlier ones; the second keeps the
new adapter small. The form (absolute values of the product, the Frobenius norm of each new
matrix) and the defaults lambda1 = 0.5, lambda2 = 0 are those of the authors' code
(cmnfriend/O-LoRA: ``src/uie_trainer_lora.py``, ``src/run_uie_lora.py``, ``scripts/order_1.sh``);
the paper writes the orthogonality term with squares instead of absolute values.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .inc_lora import IncLoRA, adapter_parameters, lora_layers


def orthogonality_loss(new: Sequence[torch.Tensor], earlier: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_l sum |earlier[l] @ new[l].T|``: zero exactly when every row of each new A is
    orthogonal to every row of the earlier A's of its layer.

    Args:
        new: the new task's A of each adapted layer, shape (r, d_in).
        earlier: the earlier tasks' A of the same layer, stacked on the first axis, shape
            (r * (t - 1), d_in); an empty list gives 0.
    Raises ValueError when the two lists differ in length.
    """
    if len(new) != len(earlier):
        raise ValueError(f"{len(new)} new A matrices but {len(earlier)} earlier ones")
    total = None
    for a_new, a_old in zip(new, earlier):
        term = (a_old.to(a_new.dtype) @ a_new.T).abs().sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


class OLoRA(IncLoRA):
    """IncLoRA plus O-LoRA's orthogonality loss (``method.olora_lambda1``) and L2 term
    (``method.olora_lambda2``) on the new task's adapter."""

    name = "o_lora"

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self._earlier: Optional[list[torch.Tensor]] = None    # per layer, for self.current

    def activate(self, k: int) -> None:
        super().activate(k)
        self._earlier = None

    def _new_and_earlier(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        k, layers = self.current, lora_layers(self.trainer.net)
        new = [m.lora_A[self.names[k]].weight for _, m in layers]
        if self._earlier is None:      # frozen while task k trains: stacked once
            self._earlier = [torch.cat([m.lora_A[n].weight.detach() for n in self.names[:k]])
                             for _, m in layers] if k else []
        return new, self._earlier

    def extra_loss(self, model: torch.nn.Module) -> Optional[torch.Tensor]:
        """lambda1 * orthogonality loss (from task 2 on) + lambda2 * L2 norm of the new adapter;
        None when both are zero (task 1 at the defaults)."""
        lam1, lam2 = self.cfg.olora_lambda1, self.cfg.olora_lambda2
        total = None
        if lam1 > 0 and self.current > 0:
            total = lam1 * orthogonality_loss(*self._new_and_earlier())
        if lam2 > 0:
            name = self.names[self.current]
            norms = [p.norm() for a, _, p in adapter_parameters(self.trainer.net) if a == name]
            l2 = lam2 * torch.stack(norms).sum()
            total = l2 if total is None else total + l2
        return total
