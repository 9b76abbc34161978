"""Where bfloat16 is faster than float32: native-bfloat16 detection and a cached matmul probe.

CPUs differ: without AVX512-BF16 or AMX a bfloat16 matmul is emulated (an AVX2-only AMD
EPYC measured a SmolLM2-shaped bfloat16 ``linear`` several times slower than float32:
``aimmerging bench --only precision``); with them it can be faster. So the ``auto``
precisions (``train.mixed_precision``, ``method.history_precision``) pick bfloat16 only
where both hold:

1. the device computes bfloat16 natively (:func:`native_bfloat16`: AVX512-BF16 or AMX on a
   CPU, Ampere or later on a CUDA GPU; an emulation never counts);
2. a probe (:func:`bfloat16_speedup`) measured a bfloat16 matmul of the model's shapes
   (:data:`PROBE_TOKENS` rows x hidden size x MLP width) at least :data:`MIN_SPEEDUP` times
   as fast as float32 on this device at this thread count.

The probe runs only where (1) holds, takes a fraction of a second, and is kept in
``cache_dir()/precision_probe.json`` (:func:`aimmerging.models.cache_dir`), keyed by device,
torch version, threads and shape, so that every run on a machine decides alike (delete the
file to measure again). The run log names the result (:func:`describe_bfloat16`).
"""

from __future__ import annotations

import functools
import json
import time
from typing import Optional, Sequence, Union

import torch

__all__ = ["MIN_SPEEDUP", "PROBE_TOKENS", "native_bfloat16", "matmul_flops_per_second",
           "probe_shape", "bfloat16_speedup", "bfloat16_pays", "describe_bfloat16"]

#: bfloat16 must measure at least this much faster than float32 for ``auto`` to pick it
MIN_SPEEDUP = 1.1
#: rows of the probe's matmul (a training batch of 8 x 128 tokens is 1024; a memory batch 256)
PROBE_TOKENS = 256
#: the probe's (rows, in, out) when the model's shapes are unknown
DEFAULT_SHAPE = (PROBE_TOKENS, 1024, 4096)
CACHE_FILE = "precision_probe.json"

_MEASURED: dict[str, dict] = {}


def native_bfloat16(device: Union[torch.device, str]) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU with bfloat16 units (Ampere or
    later; not emulated), or a CPU with AVX512-BF16 or AMX instructions."""
    device = torch.device(device)
    try:
        if device.type == "cuda":
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        if device.type == "cpu":
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError, TypeError):   # a torch build without these probes
        return False
    return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_second(dtype: torch.dtype, m: int, k: int, n: int,
                            device: Union[torch.device, str] = "cpu", repeats: int = 5,
                            min_seconds: float = 0.05) -> float:
    """The best rate, in FLOP/s (``2 * m * k * n`` per product), of ``linear([m, k], [n, k])`` in
    ``dtype``: the product a model's linear map computes (the weight stored ``[out, in]``).

    Each of ``repeats`` timings runs the product until ``min_seconds`` have passed (after one
    warm-up product); the best timing is taken, the one least disturbed by other work.
    Runs on torch's current thread count.
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(device=device, dtype=dtype)
    w = torch.randn(n, k, generator=gen).to(device=device, dtype=dtype)
    linear = torch.nn.functional.linear
    linear(a, w)
    _sync(device)
    best = 0.0
    for _ in range(max(1, repeats)):
        calls, t0 = 0, time.perf_counter()
        while True:
            linear(a, w)
            calls += 1
            _sync(device)
            spent = time.perf_counter() - t0
            if spent >= min_seconds:
                break
        best = max(best, 2.0 * m * k * n * calls / spent)
    return best


def probe_shape(config=None) -> tuple[int, int, int]:
    """(rows, hidden size, MLP width) of a Hugging Face model config (``hidden_size`` or
    ``d_model``, ``intermediate_size`` or ``d_ff``); :data:`DEFAULT_SHAPE` when unknown."""
    hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    if not hidden:
        return DEFAULT_SHAPE
    ffn = getattr(config, "intermediate_size", None) or getattr(config, "d_ff", None) or 4 * hidden
    return PROBE_TOKENS, int(hidden), int(ffn)


@functools.lru_cache(maxsize=None)
def _device_name(kind: str, index: Optional[int]) -> str:
    if kind == "cuda":
        return torch.cuda.get_device_name(index)
    from .machine import cpu_info

    return cpu_info()["model"] or kind


def _key(device: torch.device, shape: Sequence[int]) -> str:
    return (f"{device.type}|{_device_name(device.type, device.index)}|torch {torch.__version__}|"
            f"threads {torch.get_num_threads()}|{'x'.join(map(str, shape))}")


def _cache_path():
    from .models import cache_dir

    return cache_dir() / CACHE_FILE


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def bfloat16_speedup(device: Union[torch.device, str], shape: Sequence[int] = DEFAULT_SHAPE,
                     measure: bool = True) -> Optional[dict]:
    """The probe: float32 and bfloat16 rates of a ``shape`` = (rows, in, out) matmul on ``device``.

    Returns ``{"speedup": bfloat16 rate / float32 rate, "float32_flop_per_s",
    "bfloat16_flop_per_s", "shape", "measured_on"}``, from this process's memory, else from
    the cache file, else measured now (the two dtypes alternately, best of 5 each) and written
    to the cache file atomically; None when not cached and ``measure`` is False.
    """
    device = torch.device(device)
    key = _key(device, shape)
    if key in _MEASURED:
        return _MEASURED[key]
    cached = _read_cache().get(key)
    if isinstance(cached, dict) and isinstance(cached.get("speedup"), (int, float)):
        _MEASURED[key] = cached
        return cached
    if not measure:
        return None
    m, k, n = shape
    rates = {torch.float32: 0.0, torch.bfloat16: 0.0}
    for _ in range(3):                      # alternate, so that other work reaches both alike
        for dtype in rates:
            rates[dtype] = max(rates[dtype], matmul_flops_per_second(dtype, m, k, n, device,
                                                                     repeats=2, min_seconds=0.02))
    record = {"speedup": rates[torch.bfloat16] / rates[torch.float32],
              "float32_flop_per_s": rates[torch.float32],
              "bfloat16_flop_per_s": rates[torch.bfloat16], "shape": list(shape),
              "measured_on": time.strftime("%Y-%m-%d")}
    _MEASURED[key] = record
    try:
        from .io import atomic_write_json

        path = _cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {**_read_cache(), key: record})
    except OSError:                          # a read-only cache: measured again next time
        pass
    return record


def bfloat16_pays(device: Union[torch.device, str], shape: Sequence[int] = DEFAULT_SHAPE) -> bool:
    """Whether ``auto`` picks bfloat16 on ``device`` for a model of ``shape`` (module docstring):
    native bfloat16 and a probe speedup of at least :data:`MIN_SPEEDUP`. No probe runs where
    bfloat16 is not native."""
    if not native_bfloat16(device):
        return False
    return bfloat16_speedup(device, shape)["speedup"] >= MIN_SPEEDUP


def describe_bfloat16(device: Union[torch.device, str], shape: Sequence[int] = DEFAULT_SHAPE) -> str:
    """One line for the run log: is bfloat16 native on ``device``, and what the probe measured."""
    device = torch.device(device)
    if not native_bfloat16(device):
        what = "AVX512-BF16 or AMX" if device.type == "cpu" else "bfloat16 units"
        return f"not native on this {device.type} (no {what}): auto precisions keep float32"
    probe = bfloat16_speedup(device, shape, measure=False)
    if probe is None:
        return f"native on this {device.type}; not probed (no auto precision asked for it)"
    verdict = "auto picks it" if probe["speedup"] >= MIN_SPEEDUP else "auto keeps float32"
    return (f"native on this {device.type}; a {'x'.join(map(str, probe['shape']))} matmul measured "
            f"{probe['speedup']:.2f}x float32's rate ({probe['measured_on']}): {verdict}")
