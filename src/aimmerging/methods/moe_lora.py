"""MoELoRA (Luo et al., 2024), in the vanilla form the paper compares with: one LoRA expert per
task and a router, without MoELoRA's contrastive loss and with dense (not top-k) routing.

Each adapted layer (the LoRA-wrapped query and value projections by default) gets a router, a
bias-free linear map of the layer's own input x (the hidden state entering the projection,
before LoRA dropout) to one logit per expert; a softmax over the experts active so far gives
each token's gates g, and the layer computes

    W x + sum_e g_e(x) * (alpha / r) * B_e A_e dropout(x)

The experts are PEFT adapters (as in IncLoRA); the gate multiplies each expert's ``lora_B``
output through a forward hook, so PEFT's own forward does the rest. Routers start at zero
(uniform gates). While task k trains, experts 1..k are active; the router and expert k learn,
the earlier experts stay frozen unless ``method.moe_train_earlier_experts``. A stage's folder
holds the experts as IncLoRA's plus ``router.safetensors`` (:func:`load_moe_lora` loads both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..multi_adapter import load_adapters, read_manifest
from .inc_lora import IncLoRA, lora_layers

ROUTERS = "router.safetensors"


class Router(torch.nn.Module):
    """Token-level softmax gates over the experts of one adapted layer.

    Args:
        in_features: the layer's input width d_in.
        experts: the expert names, in order (one weight row each; rows start at zero).
    """

    def __init__(self, in_features: int, experts: list[str]) -> None:
        super().__init__()
        self.experts = list(experts)
        self.weight = torch.nn.Parameter(torch.zeros(len(experts), in_features))
        self.gates: Optional[torch.Tensor] = None      # of the layer's last forward
        self.active: list[str] = []

    def forward(self, x: torch.Tensor, active: list[str]) -> torch.Tensor:
        """Gates of shape ``x.shape[:-1] + (len(active),)``, each row summing to 1."""
        rows = [self.experts.index(a) for a in active]
        logits = torch.nn.functional.linear(x.to(self.weight.dtype), self.weight[rows])
        return torch.softmax(logits, dim=-1)


def attach_routers(net: torch.nn.Module, experts: list[str],
                   weights: Optional[dict[str, torch.Tensor]] = None) -> dict[str, Router]:
    """Give every LoRA layer of ``net`` a :class:`Router` and the hooks that weigh its experts'
    outputs by the gates; returns ``{layer name: router}``.

    The routers live in ``net.moe_routers`` (a ModuleList, outside the LoRA layers, so that
    PEFT's ``save_pretrained`` keeps them out of the experts' files). ``weights``: ``{layer
    name: (n, d_in)}`` for the first n experts (what :class:`MoELoRA` saves); the routers are
    then frozen. Raises ValueError when a layer's weights are missing.
    """
    routers = {}
    for name, layer in lora_layers(net):
        router = Router(layer.in_features, experts).to(layer.base_layer.weight.device)
        if weights is not None:
            if name not in weights:
                raise ValueError(f"no router weights for layer {name}")
            w = weights[name]
            with torch.no_grad():
                router.weight[:w.shape[0]].copy_(w)
            router.requires_grad_(False)
        layer.register_forward_pre_hook(_route_hook(router))
        for expert in experts:
            if expert in layer.lora_B:
                layer.lora_B[expert].register_forward_hook(_gate_hook(router, expert))
        routers[name] = router
    net.moe_routers = torch.nn.ModuleList(routers.values())
    return routers


def _route_hook(router: Router):
    def hook(layer, args) -> None:
        router.active = [a for a in layer.active_adapters if a in router.experts]
        router.gates = router(args[0], router.active) if router.active else None
    return hook


def _gate_hook(router: Router, expert: str):
    def hook(module, args, output):
        g = router.gates[..., router.active.index(expert)].unsqueeze(-1)
        return output * g.to(output.dtype)
    return hook


def load_moe_lora(model, folder: Path):
    """A MoELoRA stage folder on ``model`` (a transformers model): the experts through stock
    PEFT (:func:`~aimmerging.multi_adapter.load_adapters`), then the saved routers. Returns the
    PeftModel, ready to generate. Raises ConfigError for a folder without a valid manifest."""
    from safetensors.torch import load_file

    peft = load_adapters(model, folder)
    names = [a["name"] for a in read_manifest(folder)["adapters"]]
    attach_routers(peft, names, load_file(str(Path(folder) / ROUTERS)))
    return peft


class MoELoRA(IncLoRA):
    """One LoRA expert per task with a token-level router (module docstring)."""

    name = "moe_lora"
    combine = "router"

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self.routers: dict[str, Router] = {}

    def prepare_model(self, net: torch.nn.Module) -> None:
        super().prepare_model(net)
        self.routers = attach_routers(net, self.names)

    def trainable_adapters(self, k: int) -> list[str]:
        return self.names[:k + 1] if self.cfg.moe_train_earlier_experts else [self.names[k]]

    def save_adapter(self, net: torch.nn.Module, folder: Path) -> None:
        """IncLoRA's folder plus ``router.safetensors``: each layer's rows of the active experts."""
        from safetensors.torch import save_file

        super().save_adapter(net, folder)
        n = self.current + 1
        save_file({name: r.weight[:n].detach().contiguous().cpu() for name, r in self.routers.items()},
                  str(Path(folder) / ROUTERS))
