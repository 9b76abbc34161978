"""IncLoRA (paper section 4 "Baselines"): a new LoRA adapter for every task; the earlier
tasks' adapters stay active and frozen, so the model after task k adds k LoRA products.

All K adapters (PEFT adapters ``task01`` .. ``taskK``, :func:`~aimmerging.multi_adapter.adapter_names`)
are built at the start, so that the optimizers hold them all; before task k the method makes
adapters 1..k active and only adapter k trainable (the optimizer skips parameters without a
gradient). A stage's result is every active adapter in its own PEFT folder plus
``adapters.json`` (:mod:`aimmerging.multi_adapter`). O-LoRA and MoELoRA build on this class.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..errors import ConfigError
from ..multi_adapter import adapter_names, write_manifest
from .base import Method, Stage


def lora_layers(net: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(module name, PEFT LoRA layer)`` of every adapted layer of ``net``, in module order."""
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in net.named_modules() if isinstance(m, LoraLayer)]


def adapter_parameters(net: torch.nn.Module) -> list[tuple[str, str, torch.nn.Parameter]]:
    """``(adapter name, parameter name, parameter)`` of every LoRA parameter of ``net``
    (``...lora_A.<adapter>.weight`` and the like)."""
    from peft.tuners.lora import LoraLayer

    kinds = set(LoraLayer.adapter_layer_names)
    out = []
    for name, p in net.named_parameters():
        parts = name.split(".")
        hits = [i for i, part in enumerate(parts[:-1]) if part in kinds]
        if hits:
            out.append((parts[hits[-1] + 1], name, p))
    return out


class IncLoRA(Method):
    """Incremental LoRA: adapter k learns task k on top of the frozen adapters 1..k-1."""

    name = "inc_lora"
    #: how the stage's adapters act together (adapters.json's ``combine``)
    combine = "sum"

    def __init__(self, trainer) -> None:
        super().__init__(trainer)
        self.names = adapter_names(len(trainer.task_names))
        self.current = 0                 # the adapter (task index) being trained

    def prepare_model(self, net: torch.nn.Module) -> None:
        """Replace PEFT's ``default`` adapter with one adapter per task, all trainable for now.

        Raises ConfigError on several processes: DDP needs every trainable parameter to get a
        gradient at every step, and here only one adapter does."""
        if self.trainer.world > 1:
            raise ConfigError(f"method.name: {self.name} trains one of several adapters at a time "
                              f"and runs on one process only, not {self.trainer.world}")
        config = net.peft_config["default"]
        for name in self.names:
            net.add_adapter(name, copy.deepcopy(config))
        net.set_adapter(self.names[0])   # PeftModel's own record (save_pretrained reads it)
        net.delete_adapter("default")
        for _, _, p in adapter_parameters(net):
            p.requires_grad_(True)

    def trainable_adapters(self, k: int) -> list[str]:
        """The adapters that learn while task ``k`` (0-based) trains: its own."""
        return [self.names[k]]

    def activate(self, k: int) -> None:
        """Adapters 1..k+1 active (their outputs add up), :meth:`trainable_adapters` trainable."""
        net = self.trainer.net
        net.base_model.set_adapter(self.names[:k + 1])
        train = set(self.trainable_adapters(k))
        for adapter, _, p in adapter_parameters(net):
            p.requires_grad_(adapter in train)
        self.current = k

    def before_task(self, stage: Stage) -> None:
        self.activate(stage.index)

    def save_adapter(self, net: torch.nn.Module, folder: Path) -> None:
        """Each active adapter in ``folder/<name>/`` (PEFT), and ``adapters.json``."""
        names = self.names[:self.current + 1]
        net.save_pretrained(str(folder), selected_adapters=names, safe_serialization=True)
        write_manifest(folder, self.name, names, self.trainer.task_names[:len(names)], self.combine)

    # --- checkpoint: the trainable adapter is in the loop's checkpoint, the frozen ones here ---
    def state_dict(self) -> dict:
        return {"current": self.current}

    def tensor_state(self) -> dict[str, torch.Tensor]:
        active = set(self.names[:self.current + 1])
        return {n: p.detach() for a, n, p in adapter_parameters(self.trainer.net)
                if a in active and not p.requires_grad}

    def load_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.activate(int(state["current"]))
        params = {n: p for _, n, p in adapter_parameters(self.trainer.net)}
        frozen = self.tensor_state()
        if set(frozen) != set(tensors):
            raise ValueError(f"the frozen adapters' tensors ({len(tensors)}) are not those of "
                             f"adapters 1..{self.current} ({len(frozen)})")
        with torch.no_grad():
            for name, t in tensors.items():
                params[name].copy_(t)
