"""Model resolution: an old SmolLM2 cache loses its GGUF quantization mark."""

import json

from aimmerging.models import resolve_model_path


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
