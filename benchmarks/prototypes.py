"""Prototypes of the fixes the benchmarks point to, measured next to the shipped code.

Nothing here is used by training or evaluation; the benchmarks time these against the
package's own code paths so that a proposed change comes with its measured effect and
a check that it computes the same thing.

- :func:`answer_only_loss`: the causal-LM loss computed from the logits of the answer
  positions only. ``model(**batch).loss`` projects every position of the sequence onto
  the vocabulary (SmolLM2: 49,152 x 576 per token, about a fifth of the model's
  forward work, plus a float32 log-softmax over [batch, length, vocab]) although only
  the few answer positions carry labels. Same loss, same gradients.
- :func:`generate_shared_prefix`: greedy generation with the instruction prefix that
  all prompts of a batch share encoded once (its KV cache copied into the batch), so
  prefill only covers what differs.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def _causal_parts(model):
    """(decoder stack, output projection) of a (PEFT-wrapped) causal LM."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return lm.get_decoder(), lm.get_output_embeddings()


def answer_only_loss(model, batch: dict) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions, projecting only those."""
    decoder, head = _causal_parts(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     use_cache=False).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    logits = head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, labels[keep])


def _common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    first = prompts[0]
    n = min(len(p) for p in prompts)
    for i in range(n):
        tok = first[i]
        if any(p[i] != tok for p in prompts):
            return i
    return n


@torch.no_grad()
def generate_shared_prefix(model, encoder, inputs: Sequence[str], batch_size: int = 16,
                           max_new_tokens: int = 16, min_prefix: int = 8) -> list[str]:
    """Like :func:`aimmerging.evaluation.generate` (causal LMs), with the shared prefix cached.

    Prompts are sorted by length and batched; the longest prefix shared by all
    prompts (at most each prompt's length minus one) is run once; each batch then
    gets ``[prefix | left padding | rest]`` with the padding masked, the prefix's KV
    cache repeated over the batch, and ``generate`` continues from there.
    """
    if encoder.is_seq2seq:
        raise ValueError("generate_shared_prefix: causal LMs only")
    was_training = model.training
    model.eval()
    prompts = encoder.encode_prompts(list(inputs))
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    preds = [""] * len(prompts)
    device = next(model.parameters()).device
    p_len = min(_common_prefix(prompts), min(len(p) for p in prompts) - 1)
    cache = None
    if p_len >= min_prefix:
        prefix = torch.tensor([prompts[0][:p_len]], device=device)
        cache = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True).cache
    else:
        p_len = 0
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            rests = [prompts[i][p_len:] for i in idx]
            width = max(len(r) for r in rests)
            ids = torch.full((len(idx), p_len + width), encoder.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            if p_len:
                ids[:, :p_len] = torch.tensor(prompts[idx[0]][:p_len])
                mask[:, :p_len] = 1
            for row, r in enumerate(rests):
                ids[row, p_len + width - len(r):] = torch.tensor(r)
                mask[row, p_len + width - len(r):] = 1
            kwargs = {}
            if cache is not None:
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(len(idx))
                kwargs["cache"] = past
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=encoder.pad_id, eos_token_id=encoder.eos_id, **kwargs)
            texts = encoder.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                preds[i] = text.strip()
    finally:
        model.train(was_training)
    return preds
