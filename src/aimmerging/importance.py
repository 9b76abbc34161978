"""Element-wise parameter importance for fine-grained fusion (Recurrent-KIF / TaSL style).

Sensitivity of each trainable element: s = |theta * grad| (a first-order estimate
of the loss change when the element is zeroed). It is smoothed by an exponential
moving average I = beta * I + (1 - beta) * s, with an uncertainty term
U = beta * U + (1 - beta) * |s - I|; the importance is I * U (TaSL, Feng et al. 2024).
Two trackers run side by side: one on the new task's gradients, one on the
rehearsal (memory) gradients. At a merge the new-task weight of each element is
w = imp_new / (imp_new + imp_past), or 0.5 where both are zero.
"""

from __future__ import annotations

import torch

from .fusion import trainable_parameters


def importance_weight(score_new: torch.Tensor, score_past: torch.Tensor) -> torch.Tensor:
    """Per-element weight of the new task, score_new / (score_new + score_past), in [0, 1];
    0.5 where both scores are 0. Both tensors: one parameter's shape."""
    total = score_new + score_past
    return torch.where(total > 0, score_new / total.clamp_min(1e-30), torch.full_like(total, 0.5))


class ImportanceTracker:
    """EMA importance of the new task ("new") and of the replay memory ("rehearsal")."""

    KINDS = ("new", "rehearsal")

    def __init__(self, beta: float = 0.85) -> None:
        self.beta = beta
        self.imp: dict[str, dict[str, torch.Tensor]] = {k: {} for k in self.KINDS}
        self.unc: dict[str, dict[str, torch.Tensor]] = {k: {} for k in self.KINDS}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, kind: str) -> None:
        """Fold the current gradients (after backward, before the optimizer step) into ``kind``."""
        b = self.beta
        imp, unc = self.imp[kind], self.unc[kind]
        for name, p in trainable_parameters(model):
            if p.grad is None:
                continue
            s = (p.detach().float() * p.grad.detach().float()).abs()
            if name not in imp:
                imp[name] = s.clone()
                unc[name] = torch.zeros_like(s)
            else:
                imp[name].mul_(b).add_(s, alpha=1 - b)
                unc[name].mul_(b).add_((s - imp[name]).abs(), alpha=1 - b)

    @torch.no_grad()
    def new_weight(self) -> dict[str, torch.Tensor]:
        """Per-element weight of tau_new in [0, 1] (shape of each parameter)."""
        out = {}
        for name, i_new in self.imp["new"].items():
            score_new = i_new * self.unc["new"][name]
            if name in self.imp["rehearsal"]:
                score_past = self.imp["rehearsal"][name] * self.unc["rehearsal"][name]
            else:
                score_past = torch.zeros_like(score_new)
            out[name] = importance_weight(score_new, score_past)
        return out

    @torch.no_grad()
    def scores(self, kind: str) -> dict[str, torch.Tensor]:
        """The importance I * U of each element for ``kind`` (shape of each parameter)."""
        return {name: i * self.unc[kind][name] for name, i in self.imp[kind].items()}

    def reset(self, kind: str) -> None:
        """Forget the importance of ``kind``."""
        self.imp[kind].clear()
        self.unc[kind].clear()

    def reset_past(self) -> None:
        """Forget the rehearsal importance after a merge (the next rehearsal measures it anew)."""
        self.reset("rehearsal")

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def tensor_state(self) -> dict[str, torch.Tensor]:
        out = {}
        for kind in self.KINDS:
            for name, t in self.imp[kind].items():
                out[f"imp.{kind}.{name}"] = t
                out[f"unc.{kind}.{name}"] = self.unc[kind][name]
        return out

    def load_state(self, state: dict, tensors: dict[str, torch.Tensor], device) -> None:
        for key, t in tensors.items():
            head, _, rest = key.partition(".")
            if head in ("imp", "unc"):
                kind, _, name = rest.partition(".")
                getattr(self, head)[kind][name] = t.to(device)
