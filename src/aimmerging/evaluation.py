"""Evaluation: batched greedy generation and the per-task metric.

Prompts are sorted by length before batching, so that a batch holds prompts of
similar length and little padding is computed; predictions are returned in the
original order. Decoding is greedy (num_beams=1), as in the paper's appendix D.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .batching import Encoder


@torch.no_grad()
def generate(model, encoder: Encoder, inputs: Sequence[str], batch_size: int = 16,
             max_new_tokens: int = 16, progress: Optional[object] = None) -> list[str]:
    """Greedy predictions for ``inputs`` (strings), in their order.

    Args:
        model: a (PEFT-wrapped) Hugging Face model; put in eval mode for the call and restored.
        encoder: the run's :class:`~aimmerging.batching.Encoder` (same truncation as training).
        batch_size: prompts per ``generate`` call.
        max_new_tokens: generation length limit in tokens.
        progress: optional tqdm bar, advanced by the number of prompts done.
    Returns:
        One decoded, stripped string per input.
    """
    if not inputs:
        return []
    was_training = model.training
    model.eval()
    prompts = encoder.encode_prompts(list(inputs))
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    preds: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    tok = encoder.tokenizer
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in encoder.generation_batch([prompts[i] for i in idx]).items()}
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=encoder.pad_id, eos_token_id=encoder.eos_id)
            if not encoder.is_seq2seq:
                out = out[:, batch["input_ids"].shape[1]:]
            texts = tok.batch_decode(out, skip_special_tokens=True)
            for i, text in zip(idx, texts):
                preds[i] = text.strip()
            if progress is not None:
                progress.update(len(idx))
    finally:
        model.train(was_training)
    return preds
