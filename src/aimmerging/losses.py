"""The training loss of a batch, projecting onto the vocabulary only where a label is.

A causal LM's ``model(**batch).loss`` computes logits for every position of every
sequence (SmolLM2: 49,152 x 576 multiply-adds per position, plus a float32
log-softmax over ``[batch, length, vocab]``), although only the few answer positions
carry a label: the prompt is masked with -100. :func:`batch_loss` asks the model for
the logits of the labelled positions only (``logits_to_keep`` given as a tensor of
sequence indices, which Hugging Face causal LMs accept) and computes the same mean
next-token cross-entropy from them. The hidden states are those of the full forward
pass, the call goes through the (possibly DDP-wrapped) model as before, and the loss
and its gradients are the same up to float rounding (tested). Measured by
``aimmerging bench --only throughput``.

Encoder-decoder models (T5) label every decoder position, so their loss is the model's own.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _unwrap(model):
    """The Hugging Face model inside DDP/Accelerate and PEFT wrappers."""
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def accepts_logits_to_keep(model) -> bool:
    """Whether the (wrapped) model's ``forward`` takes ``logits_to_keep`` (most causal LMs do)."""
    return _forward_takes(type(_unwrap(model)), "logits_to_keep")


@functools.lru_cache(maxsize=None)
def _forward_takes(cls: type, name: str) -> bool:
    try:
        return name in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return False


def labelled_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence indices whose logits predict a label: ``p`` where any ``labels[:, p + 1]`` is set.

    Args:
        labels: ``[batch, length]`` token ids, -100 where there is no label.
    Returns:
        A sorted 1-D long tensor of positions in ``[0, length - 1)`` (empty when nothing is labelled).
    """
    return torch.nonzero((labels[:, 1:] != IGNORE_INDEX).any(dim=0)).flatten()


def _skips_unkept_positions(model) -> bool:
    """Whether the model runs fewer positions through some layers for an integer
    ``logits_to_keep`` (Gemma 4's KV-shared layers), which an index tensor would turn off."""
    cfg = getattr(_unwrap(model), "config", None)
    return any(getattr(c, "num_kv_shared_layers", 0) for c in (cfg, getattr(cfg, "text_config", None)))


def no_logits(model, device: torch.device):
    """``logits_to_keep`` for a pass run for its KV cache only: no position (an empty index
    tensor), or 1 for a model that skips work for an integer (:func:`_skips_unkept_positions`).
    Only for models whose ``forward`` takes ``logits_to_keep`` (:func:`accepts_logits_to_keep`).

    ``logits_to_keep=1`` would project the last position, from a strided slice that
    ``torch.matmul`` multiplies as a batched product against one copy of the vocabulary
    weight per row (about 90 ms for a few rows of SmolLM2 on one CPU thread).
    """
    return 1 if _skips_unkept_positions(model) else torch.empty(0, dtype=torch.long, device=device)


def last_logits_only(model, device: torch.device) -> dict:
    """``generate``'s ``logits_to_keep`` as a one-element index tensor (the last position).

    ``generate`` passes ``logits_to_keep=1`` by default, and a causal LM slices
    ``hidden_states[:, -1:, :]``: a strided view, which ``torch.matmul`` multiplies with the
    vocabulary projection as a batched product against one copy of the weight per row: on a
    CPU about 4x a plain product at SmolLM2's 49,152 tokens and a batch of 16, 6% of a
    batched evaluation on one thread (measured here). Indexing with a tensor copies the last
    position into a contiguous ``[batch, 1, hidden]`` instead; the logits are the same.
    Empty (``generate``'s default) for models whose ``forward`` takes no ``logits_to_keep``
    or that skip work for an integer one.
    """
    if not accepts_logits_to_keep(model) or _skips_unkept_positions(model):
        return {}
    return {"logits_to_keep": torch.tensor([-1], device=device)}


def batch_loss(model, batch: dict, is_seq2seq: bool, answer_only: bool = True) -> torch.Tensor:
    """Mean token cross-entropy of ``batch`` under ``model`` (a 0-dim float tensor).

    Args:
        model: a Hugging Face model, possibly wrapped by PEFT and by Accelerate/DDP.
        batch: ``input_ids``, ``attention_mask`` and ``labels``, each ``[batch, length]``,
            on the model's device; labels are -100 where not scored.
        is_seq2seq: True for encoder-decoder models (their own loss is used).
        answer_only: for causal LMs, compute logits only at the labelled positions;
            False (or a model whose ``forward`` has no ``logits_to_keep``) uses ``model(**batch).loss``.
    Returns:
        The mean over labelled tokens, as ``model(**batch).loss`` computes it (Hugging Face's
        ``ForCausalLMLoss`` with ``ignore_index=-100``); NaN when no token is labelled.
    """
    if is_seq2seq or not answer_only or not accepts_logits_to_keep(model):
        return model(**batch).loss
    return labelled_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                         use_cache=False)


def labelled_loss(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                  reduction: str = "mean", **extra) -> torch.Tensor:
    """Next-token cross-entropy over the labelled tokens of right-padded rows, the model
    projecting only :func:`labelled_positions` onto the vocabulary.

    Args:
        model: a causal LM whose ``forward`` takes ``logits_to_keep`` (:func:`accepts_logits_to_keep`).
        ids, mask, labels: ``[rows, width]``; labels -100 where not scored.
        reduction: ``"mean"`` over labelled tokens (NaN when none) or ``"sum"``.
        extra: more ``forward`` arguments (``use_cache``, a KV ``cache``, ``position_ids``).
    Returns:
        A 0-dim float32 tensor.
    """
    keep = labelled_positions(labels)
    out = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, **extra)
    logits = out.logits.float()                          # [rows, len(keep), vocab]
    targets = labels[:, keep + 1]                        # [rows, len(keep)]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction=reduction)
