"""Floating-point operations of a LoRA training step or a no-gradient pass of a causal LM,
counted from the model's shapes and the tokens of each batch.

A multiply-add is 2 FLOPs. For a batch of sequences of ``T_i`` real (non-padding) tokens
(``T = sum T_i``), ``A`` labelled positions (answer tokens: the loss projects only those
onto the vocabulary, :mod:`aimmerging.losses`), ``n_layers`` layers of attention width
``d_att`` (heads x head size) and, per token:

- ``N_frozen``: the frozen backbone's weights in the layers' linear maps (q, k, v, o and the
  MLP; not the embedding, a lookup, nor the output head),
- ``N_lora``: the LoRA adapters' ``r * (d_in + d_out)`` per adapted map,
- ``N_head``: the output head's ``d_model * vocab`` (tied to the embedding in SmolLM2),

the count is::

    forward  = 2 T (N_frozen + N_lora) + 2 A N_head + 4 n_layers d_att sum_i T_i^2
    backward = 2 T N_frozen + 4 T N_lora + 2 A N_head + 8 n_layers d_att sum_i T_i^2

The attention term is the score and weighted-sum products over every (query, key) pair, as
PaLM's appendix B counts it (the causal half is computed and masked). The backward pass
takes the activations' gradients through every map (``2 T N_frozen``) but the weights'
gradients of the adapters only (``4 T N_lora``: both gradients): the backbone is frozen,
so a LoRA step is about ``4 N T``, not the ``6 N T`` of full fine-tuning. The first layer's
input gradient, which autograd skips (the embedding is frozen), is counted (under 1% of the
step for SmolLM2). Norms, activations, softmax and the optimizer are left out (a few %).
Padding is not counted: the figure is useful work, so padding shows as lost rate.

Decoder-only (causal) models only; :func:`model_shapes` raises ValueError for others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch

__all__ = ["ModelShapes", "model_shapes", "batch_flops", "labelled_positions_of"]


@dataclass(frozen=True)
class ModelShapes:
    """The per-token weights a causal LM's passes multiply by (see the module docstring)."""

    frozen: int         # N_frozen: frozen weights of the layers' linear maps
    lora: int           # N_lora: LoRA adapter weights (A and B)
    head: int           # N_head: d_model x vocab
    layers: int         # n_layers
    attention_width: int  # d_att: heads x head size

    def as_dict(self) -> dict:
        return asdict(self)


def _inner(model):
    inner = getattr(model, "module", model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def model_shapes(model) -> ModelShapes:
    """The :class:`ModelShapes` of a (PEFT-, DDP-wrapped or plain) Hugging Face causal LM.

    Every ``nn.Linear`` counts: those named ``lora_A``/``lora_B`` as adapters, the output
    embeddings as the head, the others as frozen backbone maps. Raises ValueError for an
    encoder-decoder model (its encoder and decoder see different tokens).
    """
    inner = _inner(model)
    config = inner.config
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError("flops: counted for decoder-only (causal) models only")
    head = inner.get_output_embeddings()
    frozen = lora = 0
    for name, module in inner.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is head:
            continue
        weights = module.in_features * module.out_features
        if ".lora_A" in name or ".lora_B" in name:
            lora += weights
        else:
            frozen += weights
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return ModelShapes(frozen=frozen, lora=lora, head=head.in_features * head.out_features,
                       layers=config.num_hidden_layers, attention_width=heads * head_dim)


def labelled_positions_of(labels: torch.Tensor) -> int:
    """Positions whose logits the causal loss uses: labels other than -100 after the shift."""
    return int((labels[:, 1:] != -100).sum())


def batch_flops(shapes: ModelShapes, lengths: Sequence[int], labelled: int, backward: bool) -> dict:
    """``{"forward", "backward", "total"}`` FLOPs of one pass over sequences of ``lengths`` real
    tokens with ``labelled`` scored positions; ``backward`` adds a LoRA backward pass."""
    tokens = sum(lengths)
    pairs = sum(n * n for n in lengths)
    attention = 4 * shapes.layers * shapes.attention_width * pairs
    forward = 2 * tokens * (shapes.frozen + shapes.lora) + 2 * labelled * shapes.head + attention
    back = 0
    if backward:
        back = (2 * tokens * shapes.frozen + 4 * tokens * shapes.lora + 2 * labelled * shapes.head
                + 2 * attention)
    return {"forward": float(forward), "backward": float(back), "total": float(forward + back)}
