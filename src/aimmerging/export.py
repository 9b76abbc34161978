"""``aimmerging export``: a stage's adapter merged into its backbone, as a plain HF model folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import yaml

from .errors import ConfigError


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


def check_output(output: Path) -> None:
    """Refuse an ``--output`` that is a file, or a folder holding anything but an earlier
    export (a model folder: ``config.json``, weights, tokenizer files), which the export
    replaces whole. Raises ConfigError; reads only."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output: {output} exists and is not a folder")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not (output / "config.json").is_file():
        raise ConfigError(f"--output: {output} is a folder that holds something other than an "
                          f"exported model, which the export would replace: choose a new folder")
    allowed = (".json", ".safetensors", ".txt", ".model", ".jinja")
    other = sorted(p.name for p in output.iterdir() if p.is_dir() or not p.name.endswith(allowed))
    if other:
        raise ConfigError(f"--output: {output} holds {', '.join(other[:5])} besides an exported "
                          f"model, which the export would replace: choose a new folder")


def export_run(run_dir: Path, output: Path, stage: Optional[int] = None) -> tuple[Path, Path]:
    """Merge the adapter (``merge_and_unload``) and save model and tokenizer to ``output``.

    ``stage``: 1-based; None for the last stage that finished. ``output`` must be new, empty or
    an earlier export (:func:`check_output`): it is replaced whole. Returns ``(output, the
    adapter folder used)``. Raises ConfigError for a folder that is not a run, a missing stage
    or such an ``output``."""
    from peft import PeftModel

    from .config import build_config
    from .models import backbone_dtype, load_backbone

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml (not a run folder)")
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    adapter = find_adapter(run_dir, stage)
    check_output(output)
    model_cfg = build_config(cfg, str(cfg_path)).model    # validated; defaults for older runs
    backbone = load_backbone(model_cfg.name, backbone_dtype(model_cfg.dtype))
    merged = PeftModel.from_pretrained(backbone.model, str(adapter)).merge_and_unload()
    tmp = output.with_name(output.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    backbone.tokenizer.save_pretrained(str(tmp))
    if output.exists():
        shutil.rmtree(output)
    tmp.rename(output)
    return output, adapter
