"""Facts about the machine a run or benchmark ran on: the CPU model and the instruction-set
features that decide its speed in float32 and bfloat16.

CPUs differ between machines: on a CPU without AVX512-BF16 or AMX, bfloat16 matmuls are
emulated and measured several times slower than float32, so every run records these facts
(``metrics.json``: ``machine``) and every benchmark JSON too.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

__all__ = ["CPU_FLAGS", "cpu_info", "machine"]

#: the /proc/cpuinfo flags that are reported (True/False each)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_info() -> dict:
    """``{"model": str, "flags": {flag: bool for CPU_FLAGS}, "native_bfloat16": bool}``.

    The model and flags come from ``/proc/cpuinfo`` (Linux); elsewhere the model is
    ``platform.processor()`` and the flags are what torch's probes tell (AVX512-BF16, AMX).
    """
    model, flags, seen_model = platform.processor() or "", set(), False
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not seen_model:
                model, seen_model = value.strip(), True
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    import torch

    probes = {}
    for name, probe in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_tile", "_is_amx_tile_supported")):
        try:
            probes[name] = bool(getattr(torch.cpu, probe)())
        except (AttributeError, RuntimeError):
            probes[name] = None
    found = {f: (f in flags) if flags else probes.get(f) for f in CPU_FLAGS}
    native = bool(found.get("avx512_bf16") or found.get("amx_tile") or found.get("amx_bf16"))
    return {"model": model, "flags": found, "native_bfloat16": native}


def machine() -> dict:
    """The machine in a few facts: CPU (:func:`cpu_info`), the vector kernels PyTorch runs on it
    (``cpu_kernels``: ``"AVX2"``, ``"AVX512"`` ...; ``ATEN_CPU_CAPABILITY`` pins them, and they
    decide a run's last bits), cores, torch threads, memory, versions."""
    import torch

    mem = None
    try:
        import psutil

        mem = round(psutil.virtual_memory().total / 2 ** 30, 1)
    except Exception:  # pragma: no cover - psutil is a dependency
        pass
    info = cpu_info()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        kernels = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        kernels = None
    return {"cpu": info["model"], "cpu_flags": info["flags"],
            "native_bfloat16": info["native_bfloat16"], "cpu_kernels": kernels, "gpu": gpu, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "memory_gib": mem,
            "python": sys.version.split()[0], "torch": torch.__version__,
            "platform": platform.platform()}
