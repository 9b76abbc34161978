"""Single-round merging (paper section 3.1 and figure 1(a)): train task k from theta^(k-1) as
SeqLoRA does, then replace the result by theta^k = f_merge(theta^(k-1), theta^k) once, at the
end of the task (tasks k >= 2; task 1 has nothing earlier to merge with).

f_merge is PEFT's ``LoraModel.add_weighted_adapter``, with the global weights
``method.single_merge_weights`` = (weight of theta^(k-1), weight of theta^k) and the
``combination_type`` ``method.single_merge_combination`` (TIES, DARE and magnitude pruning
take ``single_merge_density`` and ``single_merge_majority_sign``). PEFT builds the merged
adapter at scaling 1; it is copied back into the trained adapter with each of A and B divided
by sqrt(alpha / r), so that the merged B·A is what PEFT computed.

``single_merge_combination: importance`` is the TaSL-style variant (Feng et al., 2024) and
not PEFT's: each element of A and B is merged as theta^(k-1) + w (theta^k - theta^(k-1)),
with w = s_new / (s_new + s_past) (:func:`aimmerging.importance.importance_weight`). s_new is
the element's importance I * U on task k's gradients (:class:`~aimmerging.importance.
ImportanceTracker`, EMA factor ``ifm_beta``); s_past sums the importances of the earlier
tasks, each measured on its own task's gradients. The global weights are not used.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence

import torch

from ..fusion import snapshot
from ..importance import ImportanceTracker, importance_weight
from .base import Method, Stage
from .inc_lora import lora_layers

log = logging.getLogger("aimmerging")

TRAINED, PREVIOUS, MERGED = "default", "previous", "merged"


def _matching_parameters(net, previous: Mapping[str, torch.Tensor]) -> dict:
    """``net``'s parameters by name; ValueError when ``previous`` does not hold exactly the
    trained adapter's tensors."""
    params = dict(net.named_parameters())
    trained = {n for n in params if f".{TRAINED}." in n}
    if set(previous) != trained:
        raise ValueError(f"the earlier adapter has {len(previous)} tensors, the trained one {len(trained)}")
    return params


def merge_into_(net, previous: Mapping[str, torch.Tensor], weights: Sequence[float],
                combination: str = "svd", density: float = 0.2, majority_sign: str = "total",
                seed: int = 0) -> None:
    """Merge the adapter ``previous`` (a :func:`~aimmerging.fusion.snapshot` of the trained
    adapter, taken before the task) into the trained PEFT adapter ``default``, in place.

    ``weights``: (weight of ``previous``, weight of the trained adapter). The merge runs
    through ``add_weighted_adapter`` on two temporary adapters, removed afterwards; DARE's
    random drops are drawn from ``seed``, the caller's random state is left as it was.
    Raises ValueError when ``previous`` does not match the trained adapter's parameters.
    """
    params = _matching_parameters(net, previous)
    device = next(iter(previous.values())).device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        net.add_adapter(PREVIOUS, copy.deepcopy(net.peft_config[TRAINED]))
        try:
            params = dict(net.named_parameters())
            with torch.no_grad():
                for n, t in previous.items():
                    params[n.replace(f".{TRAINED}.", f".{PREVIOUS}.")].copy_(t)
            net.base_model.add_weighted_adapter(
                [PREVIOUS, TRAINED], [float(w) for w in weights], MERGED,
                combination_type=combination, density=density,
                majority_sign_method=majority_sign, svd_full_matrices=False)
            with torch.no_grad():
                for _, layer in lora_layers(net):
                    root = math.sqrt(layer.scaling[TRAINED] / layer.scaling[MERGED])
                    layer.lora_A[TRAINED].weight.copy_(layer.lora_A[MERGED].weight / root)
                    layer.lora_B[TRAINED].weight.copy_(layer.lora_B[MERGED].weight / root)
        finally:
            for name in (PREVIOUS, MERGED):
                if name in net.peft_config:
                    net.delete_adapter(name)


@torch.no_grad()
def merge_by_importance_(net, previous: Mapping[str, torch.Tensor],
                         new: Mapping[str, torch.Tensor], past: Mapping[str, torch.Tensor]) -> None:
    """The TaSL-style merge, in place: each trained element theta becomes
    previous + w (theta - previous), w = new / (new + past) element-wise (0.5 where both are
    0; an element without a score counts 0). ``previous``: the adapter before the task, by
    parameter name; ``new``, ``past``: importance scores of the same names and shapes.
    Raises ValueError when ``previous`` does not match the trained adapter's parameters."""
    params = _matching_parameters(net, previous)
    for name, before in previous.items():
        p = params[name]
        zero = torch.zeros_like(p, dtype=torch.float32)
        w = importance_weight(new.get(name, zero), past.get(name, zero))
        merged = before.float() + w * (p.detach().float() - before.float())
        p.copy_(merged.to(p.dtype))


class SingleMerge(Method):
    """SeqLoRA with one merge of theta^(k-1) and theta^k at the end of every task k >= 2."""

    name = "single_merge"

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self.previous: dict[str, torch.Tensor] = {}     # theta^(k-1), from the task's start
        self.by_importance = self.cfg.single_merge_combination == "importance"
        self.importance = ImportanceTracker(self.cfg.ifm_beta)     # this task's ("new")
        self.past: dict[str, torch.Tensor] = {}         # the earlier tasks' summed importance

    def before_task(self, stage: Stage) -> None:
        self.previous = snapshot(self.trainer.net) if stage.index > 0 else {}
        self.importance.reset("new")

    def on_gradients(self, model: torch.nn.Module, kind: str) -> None:
        if self.by_importance and kind == "new":
            self.importance.update(model, "new")

    def after_task(self, stage: Stage) -> None:
        tr, c = self.trainer, self.cfg
        if self.by_importance:
            new = self.importance.scores("new")
            if self.previous:
                merge_by_importance_(tr.net, self.previous, new, self.past)
                tr.counters["single_merges"] += 1
                log.info("%s: merged into the earlier adapter (importance weights)", stage.name)
            for name, s in new.items():
                self.past[name] = self.past[name] + s if name in self.past else s.clone()
        elif self.previous:
            from ..loop import seed_key

            merge_into_(tr.net, self.previous, c.single_merge_weights, c.single_merge_combination,
                        c.single_merge_density, c.single_merge_majority_sign,
                        seed_key(tr.cfg.seed, "single_merge", stage.index))
            tr.counters["single_merges"] += 1
            log.info("%s: merged into the earlier adapter (%s, weights %s)", stage.name,
                     c.single_merge_combination, tuple(c.single_merge_weights))
        super().after_task(stage)

    def tensor_state(self) -> dict[str, torch.Tensor]:
        out = {f"previous.{k}": v for k, v in self.previous.items()}
        if self.by_importance:
            out.update({f"past.{k}": v for k, v in self.past.items()})
            out.update({f"importance.{k}": v for k, v in self.importance.tensor_state().items()})
        return out

    def load_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        device = self.trainer.accelerator.device

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v.to(device) for k, v in tensors.items()
                    if k.startswith(prefix)}

        self.previous, self.past = part("previous."), part("past.")
        self.importance.load_state({}, part("importance."), device)
