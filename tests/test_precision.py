"""Where ``auto`` picks bfloat16: native detection, the cached matmul probe, the decisions.

No timing is asserted: the probe's measurement is replaced by fixed rates where a decision
is tested, and only its structure is checked where it really runs.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import aimmerging.models as models
import aimmerging.precision as precision


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder and no measurement remembered by this process."""
    monkeypatch.setenv("AIMMERGING_CACHE", str(tmp_path))
    monkeypatch.setattr(precision, "_MEASURED", {})
    return tmp_path / precision.CACHE_FILE


def _rates(monkeypatch, bf16: float, fp32: float = 100.0) -> list:
    calls = []

    def rate(dtype, m, k, n, device="cpu", repeats=5, min_seconds=0.05):
        calls.append((dtype, m, k, n))
        return bf16 if dtype == torch.bfloat16 else fp32

    monkeypatch.setattr(precision, "matmul_flops_per_second", rate)
    return calls


def test_native_bfloat16_asks_for_the_instructions_not_the_emulation(monkeypatch):
    assert precision.native_bfloat16(torch.device("meta")) is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert precision.native_bfloat16("cpu") is False                   # plain AVX512: emulated
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.native_bfloat16("cpu") is True
    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **k: asked.append(k) or False)
    assert precision.native_bfloat16("cuda") is False
    assert asked == [{"including_emulation": False}]


def test_no_probe_runs_where_bfloat16_is_not_native(cache, monkeypatch):
    calls = _rates(monkeypatch, bf16=1000.0)
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: False)
    assert precision.bfloat16_pays("cpu", (256, 64, 128)) is False
    assert calls == [] and not cache.exists()
    assert "not native on this cpu (no AVX512-BF16 or AMX)" in precision.describe_bfloat16("cpu")


@pytest.mark.parametrize("bf16, pays", [(50.0, False), (105.0, False), (111.0, True), (300.0, True)])
def test_native_bfloat16_is_picked_only_where_it_measured_faster(cache, monkeypatch, bf16, pays):
    calls = _rates(monkeypatch, bf16=bf16)
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: True)
    assert precision.bfloat16_pays("cpu", (256, 576, 1536)) is pays
    assert {c[1:] for c in calls} == {(256, 576, 1536)}
    assert {c[0] for c in calls} == {torch.float32, torch.bfloat16}
    line = precision.describe_bfloat16("cpu", (256, 576, 1536))
    assert f"measured {bf16 / 100:.2f}x float32's rate" in line
    assert line.endswith("auto picks it" if pays else "auto keeps float32")


def test_the_probe_is_measured_once_and_kept_in_the_cache_file(cache, monkeypatch):
    calls = _rates(monkeypatch, bf16=150.0)
    first = precision.bfloat16_speedup("cpu", (256, 64, 128))
    n = len(calls)
    assert first["speedup"] == pytest.approx(1.5) and n > 0
    assert precision.bfloat16_speedup("cpu", (256, 64, 128)) == first and len(calls) == n
    stored = json.loads(cache.read_text())
    (key, record), = stored.items()
    assert "threads" in key and key.endswith("256x64x128") and record == first
    monkeypatch.setattr(precision, "_MEASURED", {})            # a new process: read from the file
    assert precision.bfloat16_speedup("cpu", (256, 64, 128)) == first and len(calls) == n
    assert precision.bfloat16_speedup("cpu", (256, 64, 256), measure=False) is None


def test_the_probe_really_measures(cache):
    """Structure only: two positive, finite rates (a tiny shape, a few milliseconds)."""
    rate = precision.matmul_flops_per_second(torch.float32, 32, 32, 32, repeats=2, min_seconds=0.001)
    assert rate > 0 and math.isfinite(rate)
    record = precision.bfloat16_speedup("cpu", (16, 32, 32))
    assert record["float32_flop_per_s"] > 0 and record["bfloat16_flop_per_s"] > 0
    assert record["speedup"] == pytest.approx(record["bfloat16_flop_per_s"] / record["float32_flop_per_s"])


def test_probe_shape_reads_the_model_config():
    from types import SimpleNamespace

    assert precision.probe_shape(SimpleNamespace(hidden_size=576, intermediate_size=1536)) == (256, 576, 1536)
    assert precision.probe_shape(SimpleNamespace(d_model=64, d_ff=128)) == (256, 64, 128)
    assert precision.probe_shape(SimpleNamespace(hidden_size=10)) == (256, 10, 40)
    assert precision.probe_shape(None) == precision.DEFAULT_SHAPE


def test_train_mixed_precision_auto(cache, monkeypatch):
    assert models.resolve_mixed_precision("bf16") == "bf16"
    assert models.resolve_mixed_precision("no") == "no"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: False)
    assert models.resolve_mixed_precision("auto", "tiny-llama") == "no"       # emulated: float32
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: True)
    calls = _rates(monkeypatch, bf16=80.0)
    assert models.resolve_mixed_precision("auto", "tiny-llama") == "no"       # measured slower
    assert {c[1:] for c in calls} == {(256, 64, 128)}                         # tiny-llama's shapes
    _rates(monkeypatch, bf16=200.0)
    monkeypatch.setattr(precision, "_MEASURED", {})
    cache.unlink()
    assert models.resolve_mixed_precision("auto", "tiny-llama") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)             # a GPU
    assert models.resolve_mixed_precision("auto") == "bf16"
    monkeypatch.setattr(precision, "native_bfloat16", lambda device: False)   # V100, T4: emulated
    assert models.resolve_mixed_precision("auto") == "fp16"


def test_this_machine_never_picks_an_emulated_bfloat16(cache):
    """On a CPU without AVX512-BF16 or AMX no ``auto`` precision is bfloat16."""
    from aimmerging.machine import cpu_info

    if cpu_info()["native_bfloat16"] or torch.cuda.is_available():
        pytest.skip("this machine has native bfloat16")
    assert precision.native_bfloat16("cpu") is False
    assert models.resolve_mixed_precision("auto", "tiny-llama") == "no"
    assert not cache.exists()                                   # and nothing was probed


def test_machine_names_the_vector_kernels_that_atens_pin_selects():
    """``machine()["cpu_kernels"]`` is the kernel set PyTorch runs, which
    ``ATEN_CPU_CAPABILITY`` pins (the cpu_small study pins AVX2): each run records it."""
    import os
    import subprocess
    import sys

    code = "from aimmerging.machine import machine; print(machine()['cpu_kernels'])"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-1] == "AVX2"
    env["ATEN_CPU_CAPABILITY"] = "default"           # no vectorised kernels at all
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-1] == "DEFAULT"
