"""Evaluation: batched greedy generation and the per-task metric.

Prompts are sorted by length before batching, so that a batch holds prompts of
similar length and little padding is computed; predictions are returned in the
original order. Decoding is greedy (num_beams=1), as in the paper's appendix D.

For causal LMs the instruction that every prompt of a task starts with (the task
definition: a third to a half of a Long Sequence prompt's tokens) is encoded once:
its KV cache is copied into each batch, which holds ``[prefix | left padding | rest]``
with the padding masked, and ``generate`` continues from there. Positions come from
the attention mask, so each token sees what it would see unpadded; the predictions
are those of one-at-a-time generation (checked by ``aimmerging bench --only evaluation``).

Inputs with no token of their own (empty, or whitespace a tokenizer drops) all have the same
prompt, :attr:`~aimmerging.batching.Encoder.blank_prompt`: it is generated once, apart, and
its prediction given to each of them; the other prompts are sorted, batched and share their
prefix as if those inputs were absent.
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch

from .batching import Encoder
from .losses import accepts_logits_to_keep, last_logits_only, no_logits
from .prefix import MIN_SHARED_PREFIX, shared_prefix_length


def _prefix_batch(encoder: Encoder, prompts: list[list[int]], p_len: int) -> dict[str, torch.Tensor]:
    """``[prefix | left padding | rest]`` rows and their attention mask ([B, L]).

    The rests are padded by :meth:`Encoder.generation_batch`; the shared prefix goes in front.
    """
    rest = encoder.generation_batch([p[p_len:] for p in prompts])
    prefix = torch.tensor(prompts[0][:p_len], dtype=torch.long).expand(len(prompts), p_len)
    return {"input_ids": torch.cat([prefix, rest["input_ids"]], dim=1),
            "attention_mask": torch.cat([torch.ones_like(prefix), rest["attention_mask"]], dim=1)}


@torch.no_grad()
def generate(model, encoder: Encoder, inputs: Sequence[str], batch_size: int = 16,
             max_new_tokens: int = 16, progress: Optional[object] = None,
             share_prefix: bool = True) -> list[str]:
    """Greedy predictions for ``inputs`` (strings), in their order.

    Args:
        model: a (PEFT-wrapped) Hugging Face model; put in eval mode for the call and restored.
        encoder: the run's :class:`~aimmerging.batching.Encoder` (same truncation as training).
        batch_size: prompts per ``generate`` call.
        max_new_tokens: generation length limit in tokens.
        progress: optional tqdm bar, advanced by the number of prompts done.
        share_prefix: causal LMs: encode the prefix all prompts share once (when it has at
            least ``MIN_SHARED_PREFIX`` tokens) and reuse its KV cache in every batch.
    Returns:
        One decoded, stripped string per input.
    """
    if not inputs:
        return []
    was_training = model.training
    model.eval()
    prompts = encoder.encode_prompts(list(inputs))
    blank = [i for i, p in enumerate(prompts) if p == encoder.blank_prompt]
    order = sorted((i for i, p in enumerate(prompts) if p != encoder.blank_prompt),
                   key=lambda i: (-len(prompts[i]), i))
    preds: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    tok = encoder.tokenizer
    p_len = 0 if encoder.is_seq2seq or not share_prefix else shared_prefix_length(
        [prompts[i] for i in order])
    prefix_cache = None
    last_logits = last_logits_only(model, device) if not encoder.is_seq2seq else {}
    # (rows, inputs they answer): sorted batches, then the blank prompt once for all blank inputs
    batches = [(order[s:s + batch_size], order[s:s + batch_size]) for s in range(0, len(order), batch_size)]
    if blank:
        batches.append((blank[:1], blank))
    try:
        if p_len >= MIN_SHARED_PREFIX:
            prefix = torch.tensor([prompts[order[0]][:p_len]], device=device)
            keep = {"logits_to_keep": no_logits(model, device)} if accepts_logits_to_keep(model) else {}
            prefix_cache = getattr(model(input_ids=prefix, attention_mask=torch.ones_like(prefix),
                                         use_cache=True, **keep), "cache", None)
        for idx, answered in batches:
            rows = [prompts[i] for i in idx]
            extra = dict(last_logits)
            if prefix_cache is not None and answered is not blank:
                batch = _prefix_batch(encoder, rows, p_len)
                extra["cache"] = copy.deepcopy(prefix_cache)
                extra["cache"].batch_repeat_interleave(len(idx))
            else:
                batch = encoder.generation_batch(rows)
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=encoder.pad_id, eos_token_id=encoder.eos_id, **extra)
            if not encoder.is_seq2seq:
                out = out[:, batch["input_ids"].shape[1]:]
            texts = tok.batch_decode(out, skip_special_tokens=True)
            if answered is blank:
                texts = texts * len(blank)
            for i, text in zip(answered, texts):
                preds[i] = text.strip()
            if progress is not None:
                progress.update(len(answered))
    finally:
        model.train(was_training)
    return preds
