"""Model loading: an old SmolLM2 cache loses its GGUF quantization mark; model.dtype."""

import json

import pytest
import torch

from aimmerging.errors import ConfigError
from aimmerging.models import backbone_dtype, load_backbone, resolve_model_path


def test_old_smollm2_cache_loses_its_gguf_mark(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMMERGING_CACHE", str(tmp_path))
    folder = tmp_path / "smollm2-135m"
    folder.mkdir()
    config = {"model_type": "llama", "hidden_size": 576,
              "quantization_config": {"dequantize": False, "quant_method": "gguf"}}
    (folder / "config.json").write_text(json.dumps(config))
    assert resolve_model_path("smollm2-135m") == str(folder)
    assert json.loads((folder / "config.json").read_text()) == {"model_type": "llama",
                                                                "hidden_size": 576}


def test_other_quantization_configs_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("AIMMERGING_CACHE", str(tmp_path))
    folder = tmp_path / "smollm2-135m"
    folder.mkdir()
    config = {"model_type": "llama", "quantization_config": {"quant_method": "bitsandbytes"}}
    (folder / "config.json").write_text(json.dumps(config))
    resolve_model_path("smollm2-135m")
    assert json.loads((folder / "config.json").read_text()) == config


def test_bfloat16_backbone_trains_a_float32_adapter(tmp_path):
    import torch
    from safetensors.torch import load_file

    from aimmerging.config import build_config
    from aimmerging.runner import run

    cfg = build_config({
        "seed": 1, "data": {"dir": None, "tasks": ["demo_sentiment", "demo_topic"], "n_train": 8,
                            "n_test": 4, "max_input_tokens": 48, "max_target_tokens": 4},
        "model": {"name": "tiny-llama", "dtype": "bfloat16"},
        "method": {"name": "aimmerging", "memory_size": 4, "s_init": 2},
        "train": {"epochs": 1, "batch_size": 4}, "eval": {"max_new_tokens": 2}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        metrics = run(cfg, tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert metrics["counters"]["train_steps"] == 4
    adapter = next((tmp_path / "run" / "adapters").glob("stage02*/adapter_model.safetensors"))
    tensors = load_file(adapter)
    assert tensors and all(t.dtype == torch.float32 for t in tensors.values())
    assert all(torch.isfinite(t).all() for t in tensors.values())


def test_auto_dtype_loads_the_checkpoint_dtype(tmp_path):
    bb = load_backbone("tiny-llama")
    bb.model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    bb.tokenizer.save_pretrained(tmp_path / "bf16")
    folder = str(tmp_path / "bf16")
    assert load_backbone(folder, backbone_dtype("auto")).model.dtype == torch.bfloat16
    assert load_backbone(folder, backbone_dtype("float32")).model.dtype == torch.float32
    assert load_backbone(folder).model.dtype == torch.float32        # the default: float32
    assert load_backbone("tiny-llama", backbone_dtype("auto")).model.dtype == torch.float32


def test_unknown_dtype_is_named():
    with pytest.raises(ConfigError, match="model.dtype: 'float64'"):
        backbone_dtype("float64")
