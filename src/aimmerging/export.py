"""``aimmerging export``: a stage's adapter merged into its backbone, as a plain HF model folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import yaml

from .errors import ConfigError, shown_names
from .io import plain_permissions, temporary_folder


def find_adapter(run_dir: Path, stage: Optional[int]) -> Path:
    """The adapter folder of stage ``stage`` (1-based), or of the last stage when None."""
    adapters = sorted(p for p in (run_dir / "adapters").glob("stage*") if p.is_dir()) \
        if (run_dir / "adapters").is_dir() else []
    if not adapters:
        raise ConfigError(f"{run_dir}: no adapters/ (not a run folder, or no stage finished)")
    if stage is None:
        return adapters[-1]
    match = [p for p in adapters if p.name.startswith(f"stage{stage:02d}_")]
    if not match:
        raise ConfigError(f"{run_dir}: no adapter for stage {stage} "
                          f"(have {', '.join(p.name for p in adapters)})")
    return match[0]


#: what ``save_pretrained`` writes for a model and its tokenizer (an earlier export holds only these)
EXPORT_FILES = frozenset({"config.json", "generation_config.json", "model.safetensors",
                          "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
                          "special_tokens_map.json", "added_tokens.json", "vocab.json",
                          "merges.txt", "spiece.model", "tokenizer.model", "chat_template.jinja",
                          "chat_template.json"})


def _is_export_file(name: str) -> bool:
    return name in EXPORT_FILES or (name.startswith("model-") and name.endswith(".safetensors"))


def check_output(output: Path) -> Path:
    """``output`` made absolute, refused (ConfigError) when it is a file, a symbolic link, the
    current folder or one above it, or a folder holding anything but an earlier export
    (:data:`EXPORT_FILES`), which the export replaces whole. Reads only."""
    if output.is_symlink():
        raise ConfigError(f"--output: {output} is a symbolic link: give the folder itself")
    path = output.resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--output: {output} exists and is not a folder")
    if path == Path.cwd().resolve() or path in Path.cwd().resolve().parents:
        raise ConfigError(f"--output: {output} is the current folder or holds it; the export "
                          f"replaces its folder whole: give a new folder")
    if path.is_dir():
        other = sorted(p.name for p in path.iterdir() if p.is_dir() or not _is_export_file(p.name))
        if other:
            raise ConfigError(f"--output: {output} holds {shown_names(other)}, which is not part "
                              f"of an exported model and would be deleted: choose a new folder")
    return path


def export_run(run_dir: Path, output: Path, stage: Optional[int] = None) -> tuple[Path, Path]:
    """Merge the adapter (``merge_and_unload``) and save model and tokenizer to ``output``.

    A stage folder of several adapters whose outputs add up (IncLoRA, O-LoRA:
    :mod:`aimmerging.multi_adapter`) is merged whole, every adapter into the one model.
    ``stage``: 1-based; None for the last stage that finished. ``output`` must be new, empty or
    an earlier export (:func:`check_output`): it is replaced whole, through a temporary
    folder beside it. Returns ``(output, the adapter folder used)``. Raises ConfigError for a
    folder that is not a run, a missing stage or such an ``output``, and for MoELoRA's experts,
    whose token-level router no merged model can hold."""
    from peft import PeftModel

    from .config import build_config, upgrade_saved
    from .models import backbone_dtype, load_backbone
    from .multi_adapter import MANIFEST, load_adapters, read_manifest

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml (not a run folder)")
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    adapter = find_adapter(run_dir, stage)
    manifest = read_manifest(adapter)
    if manifest is not None and manifest["combine"] != "sum":
        raise ConfigError(f"{adapter / MANIFEST}: its {len(manifest['adapters'])} adapters are "
                          f"weighed token by token by a router ({manifest['combine']}): no single "
                          f"merged model equals them; load them with "
                          f"aimmerging.methods.moe_lora.load_moe_lora (docs/methods.md)")
    output = check_output(output)
    model_cfg = build_config(upgrade_saved(cfg), str(cfg_path)).model  # defaults for older runs
    backbone = load_backbone(model_cfg.name, backbone_dtype(model_cfg.dtype))
    peft = PeftModel.from_pretrained(backbone.model, str(adapter)) if manifest is None \
        else load_adapters(backbone.model, adapter)
    merged = peft.merge_and_unload()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(output.parent, f".{output.name}.export-")
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        backbone.tokenizer.save_pretrained(str(tmp))
        plain_permissions(tmp)
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return output, adapter
