"""What a user hands :class:`~aimmerging.callback.AIMMergingCallback`, checked: the examples
of ``finish_task`` and ``memory=`` (text or tokenized rows, in a container that holds one row
per example), the constructor's arguments, and a memory batch through the collator that will
batch it. Each check raises :class:`~aimmerging.errors.ConfigError` naming what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .batching import IGNORE_INDEX
from .data.formats import Example
from .errors import ConfigError, one_line
from .memory import ReplayMemory, TokenizedMemory

#: the replay-memory task of the examples given as ``memory=``
GIVEN = "(memory=)"

__all__ = ["GIVEN", "as_memory", "as_examples", "is_rows", "check_container", "check_arguments",
           "memory_batch", "check_memory_batch", "text_records", "trainer_collate"]


def as_examples(items: Sequence, what: str) -> list[Example]:
    """``items`` as :class:`Example` objects: Examples, or mappings with non-empty string
    ``input`` and ``output`` fields; ConfigError naming the first that is neither."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Example):
            out.append(item)
            continue
        if not hasattr(item, "keys"):
            raise ConfigError(f"AIMMergingCallback: {what}[{i}] is a {type(item).__name__}; give "
                              f"mappings with 'input' and 'output' text, aimmerging Examples, or "
                              f"tokenized rows with 'input_ids'")
        for field in ("input", "output"):
            value = item.get(field)
            if not isinstance(value, str):
                raise ConfigError(f"AIMMergingCallback: {what}[{i}] needs string 'input' and "
                                  f"'output' fields (or is an aimmerging Example, or a tokenized "
                                  f"row with 'input_ids'); it has {sorted(map(str, item.keys()))}")
            if not value.strip():
                raise ConfigError(f"AIMMergingCallback: {what}[{i}]: field {field!r} is empty")
        out.append(Example(str(item.get("id", i)), item["input"], item["output"]))
    return out


def as_memory(memory, cfg) -> ReplayMemory:
    """The callback's ``memory=`` as a replay memory (of ``cfg``'s ratio, size and seed): a
    :class:`ReplayMemory` as it is; examples or tokenized rows kept whole, as one task
    (:data:`GIVEN`). ConfigError naming what does not fit."""
    m = cfg.method
    empty = ReplayMemory(m.memory_ratio, m.memory_size, cfg.seed)
    if memory is None:
        return empty
    if isinstance(memory, ReplayMemory):
        return memory
    check_container(memory, "memory")
    if not (isinstance(memory, (list, tuple)) or hasattr(memory, "column_names")):
        raise ConfigError("AIMMergingCallback: memory must be a ReplayMemory, a list of "
                          f"examples or tokenized rows, not {type(memory).__name__}")
    if not len(memory):
        return empty
    rows = is_rows(memory)
    kept = empty.emptied(TokenizedMemory) if rows else empty
    try:                                     # the given examples, whole, as one task
        kept.add_whole(GIVEN, list(memory) if rows else as_examples(memory, "memory"))
    except ValueError as exc:
        raise ConfigError(f"AIMMergingCallback: memory: {exc}") from None
    return kept


def is_rows(items) -> bool:
    """Whether ``items`` are tokenized rows: their first is a mapping with ``input_ids`` (a
    ``datasets.Dataset`` of text columns is text; one with a tokenizing transform, rows)."""
    first = items[0] if len(items) else None     # a Dataset's row: after its transform, if any
    return hasattr(first, "keys") and "input_ids" in first


def check_container(examples: Any, what: str) -> None:
    """ConfigError when ``examples`` is not a sequence of one row per example: a mapping (a
    ``DatasetDict`` of splits, a tokenizer's columnar ``BatchEncoding``, a dict of columns), a
    pandas ``DataFrame``, or text."""
    name = type(examples).__name__
    if not hasattr(examples, "__iter__"):
        raise ConfigError(f"AIMMergingCallback: {what} is a {name}, not a collection of "
                          f"examples; give a list of examples or a datasets.Dataset")
    if isinstance(examples, (str, bytes)):
        raise ConfigError(f"AIMMergingCallback: {what} is a {name}; give a list of examples")
    if name.startswith("IterableDataset") or not hasattr(examples, "__len__") \
            and hasattr(examples, "column_names"):
        raise ConfigError(f"AIMMergingCallback: {what} is a {name}, which has no length to draw "
                          f"the memory's sample from; give a datasets.Dataset or a list")
    if hasattr(examples, "columns") and hasattr(examples, "to_dict"):
        raise ConfigError(f"AIMMergingCallback: {what} is a {name}; give one mapping per row, "
                          f"e.g. frame.to_dict('records'), or datasets.Dataset.from_pandas(frame)")
    if hasattr(examples, "keys"):
        keys = sorted(map(str, examples.keys()))
        hint = (f"one split, e.g. {what}[{keys[0]!r}]" if name.endswith("DatasetDict") and keys
                else "one mapping per example (a list of rows, or datasets.Dataset.from_dict)")
        raise ConfigError(f"AIMMergingCallback: {what} is a {name} with keys {keys}, not a "
                          f"sequence of examples; give {hint}")


def check_arguments(tokenizer, collate, output_dir, max_tokens: tuple[int, int]) -> None:
    """ConfigError for a constructor argument of the wrong kind, before any training."""
    if tokenizer is not None and (isinstance(tokenizer, (str, Path)) or not callable(tokenizer)):
        raise ConfigError(f"AIMMergingCallback: tokenizer= takes a tokenizer object, not "
                          f"{tokenizer!r}; load it first (AutoTokenizer.from_pretrained(...))")
    if collate is not None and not callable(collate):
        raise ConfigError(f"AIMMergingCallback: collate= takes a function from a list of memory "
                          f"items to a batch, not a {type(collate).__name__}")
    if output_dir is not None and not isinstance(output_dir, (str, Path)):
        raise ConfigError(f"AIMMergingCallback: output_dir= takes a folder path, not a "
                          f"{type(output_dir).__name__}")
    for name, value, least in zip(("max_input_tokens", "max_target_tokens"), max_tokens, (8, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"AIMMergingCallback: {name} must be a whole number >= {least}, "
                              f"got {value!r}")


def trainer_collate(train_dataloader):
    """The data collator that the Trainer batches rows with (None when unknown), given the
    columns of a row of the ``datasets.Dataset`` it trains on: the Trainer drops the
    columns that its model does not take (``remove_unused_columns``) from the Dataset
    before batching, so memory rows lose the same ones (a text column would break the
    collator)."""
    from transformers.trainer_utils import RemoveColumnsCollator

    collate = getattr(train_dataloader, "collate_fn", None)
    dataset = getattr(train_dataloader, "dataset", None)
    if collate is None or not hasattr(dataset, "column_names"):
        return collate        # a list of rows: the Trainer's collator drops them itself
    try:
        first = dataset[0]    # after the Dataset's own transform (set_transform), if any
    except Exception:   # an unindexable dataset: no columns to go by
        return collate
    return RemoveColumnsCollator(collate, list(first)) if hasattr(first, "keys") else collate


def text_records(collate):
    """A text memory's batches through the user's ``collate``: it gets ``{"id", "input",
    "output"}`` mappings, the form of the examples given to ``finish_task``."""
    def batch(items: list) -> dict:
        return collate([{"id": e.id, "input": e.input, "output": e.output} for e in items])
    return batch


def memory_batch(collate, items: list, device: Optional[torch.device] = None) -> dict:
    """The tensors of ``collate(items)`` (``[rows, width]``, on ``device``), with ``labels``.

    A padding-free collator (``DataCollatorWithFlattening``, trl's ``padding_free``) packs the
    rows into one without an ``attention_mask``; the rows are then collated one at a time and
    right-padded here, so that no row attends to another's tokens.

    Raises:
        ValueError: the batch has no ``labels`` (the message lists what it has).
    """
    raw = collate(items)
    batch = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if "labels" not in batch:
        raise ValueError(f"the memory batch has no 'labels' (the collator gave {sorted(batch)}); "
                         f"give memory rows with 'labels' (the prompt masked with -100), or a "
                         f"collate= that adds them")
    if "attention_mask" not in batch:
        rows = []
        for item in items:
            one = collate([item])
            rows.append((one["input_ids"].reshape(-1), one["labels"].reshape(-1)))
        width = max(len(ids) for ids, _ in rows)
        batch = {"input_ids": torch.zeros(len(rows), width, dtype=torch.long),
                 "attention_mask": torch.zeros(len(rows), width, dtype=torch.long),
                 "labels": torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)}
        for i, (ids, labels) in enumerate(rows):
            batch["input_ids"][i, :len(ids)] = ids
            batch["attention_mask"][i, :len(ids)] = 1
            batch["labels"][i, :len(labels)] = labels
    return batch if device is None else {k: v.to(device) for k, v in batch.items()}


def check_memory_batch(collate, item: Any, where: str, shifted: bool = True) -> None:
    """ConfigError (``where`` first) when ``item`` does not go through ``collate`` into a batch
    with at least one labelled token (``shifted``, a causal LM's: after the first position,
    which no token predicts): the memory batches would fail, or score nothing."""
    try:
        batch = memory_batch(collate, [item])
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except Exception as exc:   # the user's collator: any of its errors
        msg = one_line(exc)
        raise ConfigError(f"{where}: a replay memory example does not go through the data "
                          f"collator that batches the memory ({msg}); give examples in the form "
                          f"the Trainer trains on, or collate=") from None
    labels = batch["labels"][:, 1:] if shifted else batch["labels"]
    if not bool((labels != IGNORE_INDEX).any()):
        raise ConfigError(f"{where}: the data collator gives a replay memory example no labelled "
                          f"token (every label is -100), so the history loss would be NaN")
