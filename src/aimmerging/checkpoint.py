"""Atomic checkpoints of a continual-learning run, and their restoration.

A checkpoint is one folder, ``RUN_DIR/checkpoint``, holding:

- ``adapter.safetensors``: the trainable (LoRA) parameters;
- ``optimizer.pt`` and ``rehearsal_optimizer.pt``: optimizer states (loaded with
  ``torch.load(weights_only=True)``: tensors and plain numbers only);
- ``method.safetensors``: the method's tensors (AIMMerging's anchor, EWC's Fisher ...);
- ``rng.safetensors``: the torch random-number states (one per process in a
  multi-process run: ``torch_cpu.rank1`` ...);
- ``state.json``: the position (stage, step), the controller and method state, the
  replay memory, the accuracy matrix, the traces, timings and the Python/NumPy
  random states. Non-finite floats (a NaN history loss) are stored as
  ``{"__float__": "nan"}`` since JSON has no NaN, and read back as floats.

It is written into a temporary folder (files flushed to disk) that then replaces the
previous checkpoint, so a crash at any moment leaves one complete checkpoint:
``checkpoint/``, or ``.checkpoint.old/`` when the crash fell between the two renames.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

from .errors import TrainingError, one_line
from .io import atomic_write_json, temporary_folder

CHECKPOINT = "checkpoint"
_OLD = ".checkpoint.old"
_TMP_PREFIX = ".checkpoint."
_REQUIRED = ("state.json", "adapter.safetensors", "method.safetensors", "rng.safetensors")
#: the optimizers a training run's checkpoint holds (``NAME.pt``): the main one, the rehearsal's
OPTIMIZERS = ("optimizer", "rehearsal_optimizer")


# --- JSON without NaN ---------------------------------------------------------------
def encode_floats(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``{"__float__": "nan" | "inf" | "-inf"}``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if isinstance(obj, dict):
        return {k: encode_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [encode_floats(v) for v in obj]
    return obj


def decode_floats(obj: Any) -> Any:
    """The inverse of :func:`encode_floats`."""
    if isinstance(obj, dict):
        if set(obj) == {"__float__"} and obj["__float__"] in ("nan", "inf", "-inf"):
            return float(obj["__float__"])
        return {k: decode_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_floats(v) for v in obj]
    return obj


# --- random-number states ------------------------------------------------------------
def local_torch_rng() -> dict[str, torch.Tensor]:
    """This process's torch random states (CPU, and every CUDA device)."""
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    return rng


def gather_torch_rng(accelerator) -> dict[str, torch.Tensor]:
    """:func:`local_torch_rng`, plus every rank's CPU (and current CUDA) state as
    ``torch_cpu.rank<R>`` in a multi-process run, where dropout draws differ between ranks.
    A collective call: every rank must make it."""
    rng = local_torch_rng()
    world, dev = accelerator.num_processes, accelerator.device
    if world == 1:
        return rng
    own = {"torch_cpu": torch.get_rng_state()}
    if dev.type == "cuda":
        own["torch_cuda"] = torch.cuda.get_rng_state(dev)
    for key, t in own.items():
        every = accelerator.gather(t.to(dev)).cpu().view(world, -1)
        for r in range(world):
            rng[f"{key}.rank{r}"] = every[r].clone()
    return rng


def python_rng_state() -> dict:
    """Python's and NumPy's global random states as JSON-serialisable lists."""
    version, internal, gauss = random.getstate()
    out: dict = {"python": {"version": version, "state": list(internal), "gauss": gauss}}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        out["numpy"] = {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos),
                        "has_gauss": int(has_gauss), "cached": float(cached)}
    except ImportError:   # pragma: no cover
        pass
    return out


def restore_python_rng(state: Optional[dict]) -> None:
    """Restore what :func:`python_rng_state` returned (absent parts are skipped)."""
    if not state:
        return
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"],
                             n["has_gauss"], n["cached"]))


def restore_rng(rng: dict[str, torch.Tensor], rank: int = 0) -> None:
    """Restore the torch random states saved by :func:`save_checkpoint` for process ``rank``."""
    cpu = rng.get(f"torch_cpu.rank{rank}", rng["torch_cpu"])
    torch.set_rng_state(cpu)
    if torch.cuda.is_available():
        own = rng.get(f"torch_cuda.rank{rank}")
        if own is not None:
            torch.cuda.set_rng_state(own)
            return
        states = [rng[k] for k in sorted(rng, key=_cuda_index) if k.startswith("torch_cuda_")]
        if states and len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def _cuda_index(key: str) -> int:
    return int(key.rsplit("_", 1)[-1]) if key.startswith("torch_cuda_") else -1


# --- writing ----------------------------------------------------------------------------
def _fsync_folder(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:   # pragma: no cover (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:   # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, state: dict, adapter: dict[str, torch.Tensor],
                    optimizers: dict[str, dict], method_tensors: dict[str, torch.Tensor],
                    rng: Optional[dict[str, torch.Tensor]] = None) -> Path:
    """Write a complete checkpoint atomically; returns its folder.

    ``rng``: the torch random states to store (default: this process's, see
    :func:`local_torch_rng`).
    """
    run_dir = Path(run_dir)
    tmp = temporary_folder(run_dir, _TMP_PREFIX)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()},
                  str(tmp / "adapter.safetensors"))
        save_file({k: v.detach().cpu().contiguous() for k, v in method_tensors.items()},
                  str(tmp / "method.safetensors"))
        save_file({k: v.cpu().contiguous() for k, v in (rng or local_torch_rng()).items()},
                  str(tmp / "rng.safetensors"))
        for name, sd in optimizers.items():
            torch.save(sd, tmp / f"{name}.pt")
        atomic_write_json(tmp / "state.json", encode_floats(state))   # written last
        _fsync_folder(tmp)
        final, old = run_dir / CHECKPOINT, run_dir / _OLD
        if final.exists():
            # the previous checkpoint is complete: it becomes the fallback
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
        # (when only `old` exists, a crash interrupted an earlier save: keep it until `final` is in)
        os.replace(tmp, final)
        _fsync_dir(run_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return run_dir / CHECKPOINT


def clean_partial(run_dir: Path) -> None:
    """Remove what a killed run can leave half-written: temporary checkpoint, adapter and file
    copies. A complete ``.checkpoint.old`` (the only checkpoint when the kill fell between the
    two renames) becomes ``checkpoint`` again."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for p in run_dir.iterdir():
        if p.is_dir() and p.name.startswith(_TMP_PREFIX) and p.name != _OLD:
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)
    for sub in ("adapters", "predictions"):
        folder = run_dir / sub
        if folder.is_dir():
            for p in folder.iterdir():
                if p.is_dir() and p.name.startswith(".adapter."):
                    shutil.rmtree(p, ignore_errors=True)
                elif p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"):
                    p.unlink(missing_ok=True)
    final, old = run_dir / CHECKPOINT, run_dir / _OLD
    if not _complete(final) and _complete(old):
        if final.exists():
            shutil.rmtree(final)
        os.replace(old, final)
    elif _complete(final) and old.exists():
        shutil.rmtree(old, ignore_errors=True)


# --- reading ----------------------------------------------------------------------------
def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _REQUIRED)


def incomplete_checkpoint(run_dir: Path) -> Optional[tuple[Path, str]]:
    """The first checkpoint folder of ``run_dir`` that exists but lacks one of its files, with
    that file's name (a folder damaged by hand: checkpoints are written atomically), or None."""
    for name in (CHECKPOINT, _OLD):
        folder = Path(run_dir) / name
        if folder.is_dir():
            missing = [f for f in _REQUIRED if not (folder / f).is_file()]
            if missing:
                return folder, missing[0]
    return None


def find_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest complete checkpoint folder of a run, or None."""
    for name in (CHECKPOINT, _OLD):
        folder = Path(run_dir) / name
        if _complete(folder):
            return folder
    return None


def read_state(folder: Path) -> dict:
    """``state.json`` of a checkpoint folder (non-finite floats decoded)."""
    path = Path(folder) / "state.json"
    try:
        return decode_floats(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{path}: unreadable checkpoint state ({exc})") from None


def load_checkpoint(folder: Path, optimizer_names: tuple[str, ...]) -> dict:
    """Read a checkpoint folder; returns a dict with state, adapter, optimizers, method_tensors, rng."""
    folder = Path(folder)
    state = read_state(folder)
    try:
        out = {
            "state": state,
            "adapter": load_file(str(folder / "adapter.safetensors")),
            "method_tensors": load_file(str(folder / "method.safetensors")),
            "rng": load_file(str(folder / "rng.safetensors")),
            "optimizers": {n: torch.load(folder / f"{n}.pt", weights_only=True,
                                         map_location="cpu")
                           for n in optimizer_names},
        }
    except (OSError, ValueError, RuntimeError) as exc:
        msg = " ".join(str(exc).split())
        raise TrainingError(f"{folder}: unreadable checkpoint ({msg})") from None
    except Exception as exc:   # safetensors' own error types, unpickling refusals
        msg = one_line(exc)
        raise TrainingError(f"{folder}: unreadable checkpoint ({msg})") from None
    return out
