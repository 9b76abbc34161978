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


def export_run(run_dir: Path, output: Path, stage: Optional[int] = None) -> Path:
    """Merge the adapter (``merge_and_unload``) and save model and tokenizer to ``output``."""
    from peft import PeftModel

    from .config import build_config
    from .models import backbone_dtype, load_backbone

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml (not a run folder)")
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    adapter = find_adapter(run_dir, stage)
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
    return output
