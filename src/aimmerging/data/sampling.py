"""Seeded, order-preserving subsampling and the per-task loader used by the trainer."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Sequence

from aimmerging.data.formats import Example, load_split
from aimmerging.data.registry import TaskInfo, canonical_task_name, get_task_info

__all__ = ["TaskData", "subsample", "load_task_data"]


def _largest_remainder(counts: list[int], n: int) -> list[int]:
    """Split ``n`` over groups in proportion to ``counts`` (Hamilton's method).

    Each group gets floor(n * c / N); the seats left go to the largest remainders,
    ties to the group seen first. Exact integer arithmetic, so no float drift.
    """
    total = sum(counts)
    quotas = [n * c // total for c in counts]
    remainders = [n * c % total for c in counts]
    left = n - sum(quotas)
    order = sorted(range(len(counts)), key=lambda g: (-remainders[g], g))
    for g in order[:left]:
        quotas[g] += 1
    return quotas


def subsample(
    examples: Sequence[Example], n: int | None, seed: int | str, stratify: bool = False
) -> list[Example]:
    """``n`` examples drawn without replacement, returned in their original order.

    ``n`` None or >= len(examples): all of them. Otherwise ``random.Random(seed)``
    picks the indices (``seed`` may be an int or a string; both are deterministic
    across runs and machines). With ``stratify=True`` the draw is done per output
    label, each label getting its largest-remainder share of ``n`` (labels in
    order of first appearance break ties); labels are compared exactly.
    """
    items = list(examples)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"n must be a non-negative integer or None, got {n!r}")
    if n is None or n >= len(items):
        return items
    rng = random.Random(seed)
    if not stratify:
        chosen = rng.sample(range(len(items)), n)
    else:
        groups: dict[str, list[int]] = {}
        for index, example in enumerate(items):
            groups.setdefault(example.output, []).append(index)
        members = list(groups.values())
        quotas = _largest_remainder([len(m) for m in members], n)
        chosen = []
        for indices, quota in zip(members, quotas):
            chosen.extend(rng.sample(indices, quota))
    return [items[i] for i in sorted(chosen)]


@dataclass
class TaskData:
    """One task, ready for training and evaluation."""

    info: TaskInfo
    train: list[Example]
    test: list[Example]


def load_task_data(
    data_dir: str | os.PathLike[str],
    task: str,
    n_train: int | None,
    n_test: int | None,
    seed: int | str,
    test_split: str = "test",
    default_metric: str | None = None,
) -> TaskData:
    """Load a task's train split and its evaluation split, each subsampled.

    The train sample is uniform; the test sample is stratified by label when the
    task is scored by accuracy. The two draws use independent seeds derived from
    ``seed`` and the task name (``f"{seed}:{task}:train"`` / ``":test"``), so
    changing ``n_train`` never changes the test set. ``default_metric`` lets a
    task outside the registry through (see :func:`get_task_info`).
    """
    info = get_task_info(task, default_metric=default_metric)
    name = canonical_task_name(task)
    train = subsample(load_split(data_dir, task, "train"), n_train, f"{seed}:{name}:train")
    test = subsample(
        load_split(data_dir, task, test_split),
        n_test,
        f"{seed}:{name}:test",
        stratify=info.metric == "accuracy",
    )
    return TaskData(info=info, train=train, test=test)
