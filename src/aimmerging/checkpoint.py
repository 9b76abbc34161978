"""Atomic checkpoints of a continual-learning run, and their restoration.

A checkpoint is one folder, ``RUN_DIR/checkpoint``, holding:

- ``adapter.safetensors``: the trainable (LoRA) parameters;
- ``optimizer.pt`` and ``rehearsal_optimizer.pt``: optimizer states (loaded with
  ``torch.load(weights_only=True)``: tensors and plain numbers only);
- ``method.safetensors``: the method's tensors (AIMMerging's anchor, EWC's Fisher ...);
- ``rng.safetensors``: the torch random-number states;
- ``state.json``: the position (stage, step), the controller and method state, the
  replay memory, the accuracy matrix, the traces and timings.

It is written into a temporary folder that then replaces the previous checkpoint,
so a crash at any moment leaves one complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from .errors import TrainingError
from .io import atomic_write_json

CHECKPOINT = "checkpoint"
_OLD = ".checkpoint.old"


def save_checkpoint(run_dir: Path, state: dict, adapter: dict[str, torch.Tensor],
                    optimizers: dict[str, dict], method_tensors: dict[str, torch.Tensor]) -> Path:
    """Write a complete checkpoint atomically; returns its folder."""
    run_dir = Path(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".checkpoint.", dir=run_dir))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()},
                  str(tmp / "adapter.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in method_tensors.items()},
                  str(tmp / "method.safetensors"))
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{i}"] = s
        save_file(rng, str(tmp / "rng.safetensors"))
        for name, sd in optimizers.items():
            torch.save(sd, tmp / f"{name}.pt")
        atomic_write_json(tmp / "state.json", state)
        final, old = run_dir / CHECKPOINT, run_dir / _OLD
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return run_dir / CHECKPOINT


def find_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint folder of a run, or None."""
    for name in (CHECKPOINT, _OLD):
        folder = Path(run_dir) / name
        if (folder / "state.json").is_file():
            return folder
    return None


def load_checkpoint(folder: Path, optimizer_names: tuple[str, ...]) -> dict:
    """Read a checkpoint folder; returns a dict with state, adapter, optimizers, method_tensors, rng."""
    folder = Path(folder)
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        out = {
            "state": state,
            "adapter": load_file(str(folder / "adapter.safetensors")),
            "method_tensors": load_file(str(folder / "method.safetensors")),
            "rng": load_file(str(folder / "rng.safetensors")),
            "optimizers": {n: torch.load(folder / f"{n}.pt", weights_only=True)
                           for n in optimizer_names},
        }
    except (OSError, ValueError, RuntimeError) as exc:
        raise TrainingError(f"{folder}: unreadable checkpoint ({exc})") from None
    return out


def restore_rng(rng: dict[str, torch.Tensor]) -> None:
    """Restore the torch random-number states saved by :func:`save_checkpoint`."""
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if states:
            torch.cuda.set_rng_state_all(states)
