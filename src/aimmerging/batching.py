"""Tokenisation and batches for training and generation.

- seq2seq (T5): ``input_ids`` from the input, ``labels`` from the output, padded with -100.
- causal LM: prompt + answer + EOS in one sequence, the prompt positions masked with
  -100 in ``labels``; training batches are right-padded, generation batches left-padded.
- Inputs longer than ``max_input_tokens`` are cut in the middle, so that the
  instruction at the start and the answer cue ("Answer:") at the end both survive.
- An input that gives no token at all (an empty text; whitespace for some tokenizers), with
  a tokenizer that adds no special token of its own, becomes the one-token prompt
  :attr:`Encoder.blank_prompt` (the tokenizer's BOS, else its EOS): a zero-length row would
  break the model's reshapes in training and generation. Other prompts are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import ConfigError

IGNORE_INDEX = -100


def cut_middle(ids: list[int], max_len: int) -> list[int]:
    """Keep the first ``ceil(max_len/2)`` and the last ``floor(max_len/2)`` tokens when too long."""
    if len(ids) <= max_len:
        return list(ids)
    head = (max_len + 1) // 2
    tail = max_len - head
    return list(ids[:head]) + (list(ids[-tail:]) if tail else [])


def _special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer adds before and after a text (e.g. BOS, or T5's EOS)."""
    probe = "a b"
    with_sp = tokenizer(probe, add_special_tokens=True)["input_ids"]
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    for start in range(len(with_sp) - len(plain) + 1):
        if with_sp[start:start + len(plain)] == plain:
            return with_sp[:start], with_sp[start + len(plain):]
    return [], []


@dataclass
class Encoded:
    """One tokenised example: prompt ids (after the middle cut) and answer ids (with EOS)."""

    prompt: list[int]
    answer: list[int]


class Encoder:
    """Tokenises examples once and builds padded batches (tensors of shape [batch, length]).

    Args:
        tokenizer: a Hugging Face tokenizer with an EOS token (and a pad token; else EOS pads).
        is_seq2seq: True for encoder-decoder models.
        max_input_tokens: prompt length limit in tokens (special tokens included).
        max_target_tokens: answer length limit in tokens (EOS included).

    Raises:
        ConfigError: the tokenizer has no EOS token.
    """

    def __init__(self, tokenizer, is_seq2seq: bool, max_input_tokens: int = 512,
                 max_target_tokens: int = 64):
        self.tokenizer = tokenizer
        self.is_seq2seq = is_seq2seq
        self.max_input_tokens = max_input_tokens
        self.max_target_tokens = max_target_tokens
        self.prefix, self.suffix = _special_affixes(tokenizer)
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ConfigError(f"{type(tokenizer).__name__}: the tokenizer has no EOS token, which "
                              f"ends every answer; set tokenizer.eos_token")
        # no pad token (Llama style): EOS pads, as load_backbone sets it; the mask hides it
        self.pad_id = self.eos_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id
        bos = getattr(tokenizer, "bos_token_id", None)
        #: the prompt of an input with no token of its own (see the module docstring)
        self.blank_prompt: list[int] = self.prefix + self.suffix or [self.eos_id if bos is None else bos]
        self._cache: dict[tuple[str, str], Encoded] = {}

    def encode_prompts(self, texts: Sequence[str]) -> list[list[int]]:
        """Prompt ids for each text: specials added, cut in the middle to ``max_input_tokens``;
        a text with no token of its own gives :attr:`blank_prompt` (never an empty list)."""
        plain = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        budget = max(1, self.max_input_tokens - len(self.prefix) - len(self.suffix))
        return [self.prefix + cut_middle(ids, budget) + self.suffix if ids else list(self.blank_prompt)
                for ids in plain]

    def encode(self, examples) -> list[Encoded]:
        """Tokenise examples (objects with ``input`` and ``output``), cached by text."""
        todo = [ex for ex in examples if (ex.input, ex.output) not in self._cache]
        if todo:
            prompts = self.encode_prompts([ex.input for ex in todo])
            answers_text = [ex.output if self.is_seq2seq else " " + ex.output.strip() for ex in todo]
            answers = self.tokenizer(answers_text, add_special_tokens=False)["input_ids"]
            for ex, p, a in zip(todo, prompts, answers):
                a = a[: self.max_target_tokens - 1] + [self.eos_id]
                self._cache[(ex.input, ex.output)] = Encoded(p, a)
        return [self._cache[(ex.input, ex.output)] for ex in examples]

    def train_batch(self, examples) -> dict[str, torch.Tensor]:
        """A padded training batch: ``input_ids``, ``attention_mask``, ``labels`` ([B, L])."""
        enc = self.encode(examples)
        if self.is_seq2seq:
            ids = [e.prompt for e in enc]
            labels = [e.answer for e in enc]
            return {
                "input_ids": _pad(ids, self.pad_id, left=False),
                "attention_mask": _pad([[1] * len(x) for x in ids], 0, left=False),
                "labels": _pad(labels, IGNORE_INDEX, left=False),
            }
        seqs = [e.prompt + e.answer for e in enc]
        labels = [[IGNORE_INDEX] * len(e.prompt) + e.answer for e in enc]
        return {
            "input_ids": _pad(seqs, self.pad_id, left=False),
            "attention_mask": _pad([[1] * len(s) for s in seqs], 0, left=False),
            "labels": _pad(labels, IGNORE_INDEX, left=False),
        }

    def generation_batch(self, prompts: list[list[int]]) -> dict[str, torch.Tensor]:
        """A batch of prompt ids for ``generate``: left-padded for causal LMs."""
        left = not self.is_seq2seq
        return {
            "input_ids": _pad(prompts, self.pad_id, left=left),
            "attention_mask": _pad([[1] * len(p) for p in prompts], 0, left=left),
        }


def _pad(rows: list[list[int]], value: int, left: bool) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            if left:
                out[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            else:
                out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out
