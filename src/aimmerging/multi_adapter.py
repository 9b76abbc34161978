"""A stage folder holding several LoRA adapters (IncLoRA, O-LoRA, MoELoRA), and loading it
with stock PEFT.

::

    adapters/stageNN_<task>/
      adapters.json        {"method": "inc_lora", "combine": "sum",
                            "adapters": [{"name": "task01", "task": "dbpedia"}, ...]}
      task01/              a PEFT adapter: adapter_config.json, adapter_model.safetensors
      task02/ ...          one per task trained so far, in training order
      router.safetensors   MoELoRA only: each adapted layer's router (methods/moe_lora.py)

``combine`` says how the adapters act together: ``"sum"``: all of them active, their
outputs added (PEFT's multi-adapter forward; :func:`load_adapters` gives that model);
``"router"``: MoELoRA's router weighs them token by token
(:func:`aimmerging.methods.moe_lora.load_moe_lora`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .errors import ConfigError
from .io import atomic_write_json

MANIFEST = "adapters.json"
COMBINES = ("sum", "router")

__all__ = ["MANIFEST", "adapter_names", "write_manifest", "read_manifest", "load_adapters"]


def adapter_names(count: int) -> list[str]:
    """``task01``, ``task02`` ...: one adapter name per task, all of one width, so that no name
    is part of another (PEFT picks an adapter's weights by the name's substring)."""
    width = max(2, len(str(count)))
    return [f"task{i + 1:0{width}d}" for i in range(count)]


def write_manifest(folder: Path, method: str, names: list[str], tasks: list[str],
                   combine: str) -> None:
    """Write ``adapters.json`` into ``folder`` (atomically): the adapters in order, the task each
    was trained on, and how they combine (:data:`COMBINES`)."""
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, not {combine!r}")
    atomic_write_json(Path(folder) / MANIFEST, {
        "method": method, "combine": combine,
        "adapters": [{"name": n, "task": t} for n, t in zip(names, tasks)]})


def read_manifest(folder: Path) -> Optional[dict]:
    """The folder's ``adapters.json`` as a dict, or None when the folder holds one plain adapter.

    Raises ConfigError naming the file and the field when the file is malformed or names an
    adapter folder that is not there.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected an object")
    if data.get("combine") not in COMBINES:
        raise ConfigError(f"{path}: combine: expected one of {', '.join(COMBINES)}, "
                          f"got {data.get('combine')!r}")
    adapters = data.get("adapters")
    if not isinstance(adapters, list) or not adapters:
        raise ConfigError(f"{path}: adapters: expected a list of at least one adapter")
    for i, entry in enumerate(adapters):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ConfigError(f"{path}: adapters[{i}].name: expected a folder name, got {name!r}")
        if not (Path(folder) / name / "adapter_config.json").is_file():
            raise ConfigError(f"{path}: adapters[{i}].name: no adapter folder {name}/ "
                              f"(with adapter_config.json) beside it")
    return data


def load_adapters(model, folder: Path):
    """A ``PeftModel`` on ``model`` (a transformers model) with every adapter of the stage
    folder loaded (``PeftModel.from_pretrained`` and ``load_adapter``, frozen) and active, in
    the manifest's order: for ``combine: sum`` this is the model the run evaluated.

    Raises ConfigError when ``folder`` has no valid ``adapters.json``.
    """
    from peft import PeftModel

    manifest = read_manifest(folder)
    if manifest is None:
        raise ConfigError(f"{folder}: no {MANIFEST} (a single adapter: PeftModel.from_pretrained "
                          f"loads it)")
    names = [a["name"] for a in manifest["adapters"]]
    peft = PeftModel.from_pretrained(model, str(Path(folder) / names[0]), adapter_name=names[0])
    for name in names[1:]:
        peft.load_adapter(str(Path(folder) / name), adapter_name=name)
    peft.base_model.set_adapter(names, inference_mode=True)
    return peft
