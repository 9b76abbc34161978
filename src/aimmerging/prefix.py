"""Shared instruction prefixes: encode the tokens a group of sequences starts with once.

Every example of a task starts with the same task definition (on Long Sequence a
third to a half of the tokens: 57 of about 126 for dbpedia with SmolLM2's
tokenizer). A memory batch draws its examples from a few past tasks, so most of
its rows repeat one of a few prefixes. :func:`grouped_loss` runs each such prefix
once (one row), copies its KV cache to the rows that share it, and runs only the
rest of those rows on top; rows that share no prefix run as one plain batch. The
loss is the same mean next-token cross-entropy as :func:`~aimmerging.losses.batch_loss`
up to float rounding (tested), because every token attends to the same keys at the
same positions (right padding: positions count from the start of the row).

Used for the history loss (a no-gradient pass on a memory batch after every step,
SPEC.md); measured by ``aimmerging bench --only overhead``. Causal LMs whose
``forward`` takes ``cache`` and ``logits_to_keep`` only; others use the plain batch.
"""

from __future__ import annotations

import logging
import weakref
from typing import Optional, Sequence

import torch

from .losses import IGNORE_INDEX, _forward_takes, _unwrap, labelled_loss, no_logits

MIN_SHARED_PREFIX = 8   # tokens; a shorter shared prefix is not worth a separate pass
#: below this many parameters a forward pass is mostly fixed per-call cost, so the two or
#: three passes of :func:`grouped_loss` cost more than the tokens they save ("auto" setting)
MIN_SHARING_PARAMETERS = 50_000_000


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all ``prompts`` share, at most the shortest minus one.

    At least one token of every prompt is left after the prefix. Returns 0 for no prompts.
    """
    if not prompts:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for i in range(max(n, 0)):
        if any(p[i] != first[i] for p in prompts):
            return i
    return max(n, 0)


def prefix_groups(seqs: Sequence[Sequence[int]], limits: Sequence[int],
                  min_len: int = MIN_SHARED_PREFIX) -> list[tuple[int, list[int]]]:
    """Partition rows into groups that each run one shared prefix, saving the most tokens.

    Rows are sorted by their tokens, so rows that share a prefix are consecutive; the
    sorted rows are cut into runs by dynamic programming. A run of ``g`` rows sharing
    ``p`` tokens (capped by each row's ``limits[i]`` and at least ``min_len``) saves
    ``(g - 1) * p`` token positions and costs about ``min_len`` for its extra pass; a
    task's long instruction beats the chat template that all tasks share.
    Args:
        seqs: the token ids of each row, unpadded.
        limits: the longest prefix each row may share (its first scored position).
    Returns:
        ``[(prefix_length, rows)]``, rows in ascending order; rows that share nothing
        worth a pass form one last group with prefix length 0. Every row is in one group.
    """
    order = sorted(range(len(seqs)), key=lambda i: (list(seqs[i]), i))
    n = len(order)

    cap = [min(limits[r], len(seqs[r]) - 1) for r in order]
    adjacent = [shared_prefix_length([seqs[order[i]], seqs[order[i + 1]]]) for i in range(n - 1)]
    best = [0] * (n + 1)                          # best[j]: tokens saved by the first j rows
    cut: list[Optional[tuple[int, int]]] = [None] * (n + 1)
    for j in range(1, n + 1):
        best[j], cut[j] = best[j - 1], None       # row j - 1 left alone
        p = cap[j - 1]
        for i in range(j - 2, -1, -1):            # a run of rows i .. j - 1 (two or more)
            p = min(p, cap[i], adjacent[i])       # sorted rows: the run shares its adjacent minimum
            if p < min_len:
                break
            gain = (j - 1 - i) * p - min_len
            if best[i] + gain > best[j]:
                best[j], cut[j] = best[i] + gain, (i, p)
    groups, alone, j = [], [], n
    while j > 0:
        if cut[j] is None:
            alone.append(order[j - 1])
            j -= 1
        else:
            i, p = cut[j]
            groups.append((p, sorted(order[i:j])))
            j = i
    groups.reverse()
    if alone:
        groups.append((0, sorted(alone)))
    return groups


def training_shares_prefix(cfg, world: int) -> bool:
    """Whether training steps run shared prefixes once: ``train.share_prefix`` on one process
    without gradient checkpointing (several forward passes before one backward would trip
    DDP's gradient hooks, and checkpointing returns no KV cache); warns when it is ignored."""
    on = cfg.train.share_prefix and world == 1 and not cfg.model.gradient_checkpointing
    if cfg.train.share_prefix and not on:
        logging.getLogger("aimmerging").warning(
            "train.share_prefix is ignored with several processes or gradient checkpointing")
    return on


_PARAMETER_COUNTS: "weakref.WeakKeyDictionary[torch.nn.Module, int]" = weakref.WeakKeyDictionary()


def sharing_pays(model) -> bool:
    """Whether the (wrapped) model is large enough for shared prefixes to save time (``"auto"``).

    The parameter count is computed once per model (it is asked at every history step)."""
    inner = _unwrap(model)
    if inner not in _PARAMETER_COUNTS:
        _PARAMETER_COUNTS[inner] = sum(p.numel() for p in inner.parameters())
    return _PARAMETER_COUNTS[inner] >= MIN_SHARING_PARAMETERS


def can_share_prefix(model) -> bool:
    """Whether the (wrapped) model's ``forward`` takes a ``cache`` and ``logits_to_keep`` and
    attends to every earlier token (no sliding window: a padded prefix would shift out of it)."""
    inner = _unwrap(model)
    cfg = getattr(inner, "config", None)
    sliding = bool(getattr(cfg, "sliding_window", None)) and getattr(cfg, "use_sliding_window", True)
    sliding = sliding or "sliding_attention" in (getattr(cfg, "layer_types", None) or ())
    cls = type(inner)
    return not sliding and _forward_takes(cls, "cache") and _forward_takes(cls, "logits_to_keep")


def _summed_loss(model, ids, mask, labels, **extra) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy and label count of right-padded rows ``ids`` ([rows, width])."""
    count = int((labels[:, 1:] != IGNORE_INDEX).sum())
    if not count:
        return ids.new_zeros((), dtype=torch.float32), 0
    return labelled_loss(model, ids, mask, labels, reduction="sum", **extra), count


def _pad_rows(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = rows[0].new_full((len(rows), width), value)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def _shared_rows_loss(model, ids, labels, lengths, groups) -> Optional[tuple[torch.Tensor, int]]:
    """The loss of the rows in ``groups`` ([(prefix_length, rows)]) in two passes (None when
    the model returns no KV cache).

    Pass 1 runs every group's prefix, one row each (right-padded). Pass 2 runs the
    rest of every row on top of its group's KV cache, with the prefix padding masked
    and positions counted from the end of the row's own prefix.
    """
    prefix_ids = _pad_rows([ids[rows[0], :p] for p, rows in groups], 0)
    prefix_mask = _pad_rows([torch.ones(p, dtype=torch.long, device=ids.device) for p, _ in groups], 0)
    cache = model(input_ids=prefix_ids, attention_mask=prefix_mask, use_cache=True,
                  logits_to_keep=no_logits(model, ids.device)).cache
    if cache is None:      # no cache (gradient checkpointing in training): the caller runs plain
        return None
    owner = [g for g, (_, rows) in enumerate(groups) for _ in rows]
    members = [(p, r) for p, rows in groups for r in rows]
    cache.reorder_cache(torch.tensor(owner, device=ids.device))      # one cache row per row
    rest = _pad_rows([ids[r, p:lengths[r]] for p, r in members], 0)
    rest_labels = _pad_rows([labels[r, p:lengths[r]] for p, r in members], IGNORE_INDEX)
    rest_mask = _pad_rows([torch.ones(lengths[r] - p, dtype=torch.long, device=ids.device)
                           for p, r in members], 0)
    mask = torch.cat([prefix_mask[owner], rest_mask], dim=1)          # [rows, longest prefix + width]
    positions = torch.tensor([p for p, _ in members], device=ids.device)[:, None] \
        + torch.arange(rest.shape[1], device=ids.device)[None, :]
    return _summed_loss(model, rest, mask, rest_labels, cache=cache, position_ids=positions,
                        use_cache=True)


CALL_COST = 24   # token positions: a forward pass's fixed cost (SmolLM2 on one CPU thread: ~65 ms)


def _plan_cost(groups: list[tuple[int, list[int]]], lengths: list[int], call_cost: int = CALL_COST) -> int:
    """Token positions (padding included) that :func:`grouped_loss` runs for ``groups``, plus
    ``call_cost`` per forward pass."""
    shared = [(p, r) for p, rows in groups if p for r in rows]
    plain = [lengths[r] for p, rows in groups if not p for r in rows]
    cost = 0
    if shared:
        prefixes = [p for p, _ in groups if p]
        cost += len(prefixes) * max(prefixes) + len(shared) * max(lengths[r] - p for p, r in shared)
        cost += 2 * call_cost
    if plain:
        cost += len(plain) * max(plain) + call_cost
    return cost


def _cheapest(groups: list[tuple[int, list[int]]], lengths: list[int]) -> list[tuple[int, list[int]]]:
    """``groups`` with the shared groups whose padding costs more than they save made plain."""
    while True:
        shared = [g for g in groups if g[0]]
        plain = [r for p, rows in groups if not p for r in rows]
        best, best_cost = None, _plan_cost(groups, lengths)
        for g in shared:
            trial = [h for h in shared if h is not g] + [(0, sorted(plain + g[1]))]
            cost = _plan_cost(trial, lengths)
            if cost < best_cost:
                best, best_cost = trial, cost
        if best is None:
            return groups
        groups = best


def _plan(batch: dict, min_len: int) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """The groups :func:`grouped_loss` runs for ``batch``, and each row's unpadded length."""
    ids, labels = batch["input_ids"], batch["labels"]
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    scored = labels[:, 1:] != IGNORE_INDEX
    limits = [int(torch.nonzero(row)[0]) if bool(row.any()) else 0 for row in scored]
    seqs = [ids[i, :lengths[i]].tolist() for i in range(ids.shape[0])]
    return _cheapest(prefix_groups(seqs, limits, min_len), lengths), lengths


def tokens_run(batch: dict, min_len: int = MIN_SHARED_PREFIX) -> int:
    """Token positions, padding included, that :func:`grouped_loss` runs for ``batch`` (the
    plain batch runs ``batch_size * length``); used by the scaling benchmark."""
    groups, lengths = _plan(batch, min_len)
    return _plan_cost(groups, lengths, call_cost=0)


def grouped_loss(model, batch: dict, min_len: int = MIN_SHARED_PREFIX) -> torch.Tensor:
    """Mean token cross-entropy of a right-padded causal-LM ``batch``, shared prefixes run once.

    At most three forward passes: the shared prefixes (one row per group), the rest of
    the rows that share one (on top of their group's KV cache), the rows that share none.
    Args:
        model: a causal LM (PEFT/Accelerate-wrapped or not) for which :func:`can_share_prefix`.
        batch: ``input_ids``, ``attention_mask``, ``labels`` ([batch, length], right-padded,
            labels -100 where not scored), on the model's device.
        min_len: the shortest prefix worth sharing, in tokens.
    Returns:
        A 0-dim float tensor: the mean over labelled tokens, as ``batch_loss`` gives it up to
        float rounding; NaN when no token is labelled. Differentiable (the prefix pass's
        gradient sums over the rows that share it), although the loop uses it without one.
    """
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    groups, lengths = _plan(batch, min_len)
    shared = [(p, rows) for p, rows in groups if p]
    part = _shared_rows_loss(model, ids, labels, lengths, shared) if shared else None
    if shared and part is None:
        groups = [(0, list(range(ids.shape[0])))]
    parts = [part] if part is not None else []
    for p, rows in groups:
        if not p:
            idx = torch.tensor(rows, device=ids.device)
            width = max(lengths[r] for r in rows)
            parts.append(_summed_loss(model, ids[idx, :width], mask[idx, :width],
                                      labels[idx, :width], use_cache=False))
    count = sum(n for _, n in parts)
    if not count:
        return ids.new_full((), float("nan"), dtype=torch.float32)
    return sum(loss for loss, _ in parts) / count
