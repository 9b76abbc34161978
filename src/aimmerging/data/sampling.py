"""Seeded, order-preserving subsampling and the per-task loader used by the trainer."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Sequence

from aimmerging.data.formats import Example, list_tasks, load_split
from aimmerging.data.registry import TaskInfo, canonical_task_name, get_task_info
from aimmerging.errors import ConfigError

__all__ = ["TaskData", "draw_task", "held_out", "load_task_data", "subsample"]


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


def _draw(outputs: Sequence[str], n: int | None, seed: int | str, stratify: bool) -> list[int]:
    """The sorted indices :func:`subsample` keeps of items with these ``outputs``."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"n must be a non-negative integer or None, got {n!r}")
    if n is None or n >= len(outputs):
        return list(range(len(outputs)))
    rng = random.Random(seed)
    if not stratify:
        chosen = rng.sample(range(len(outputs)), n)
    else:
        groups: dict[str, list[int]] = {}
        for index, output in enumerate(outputs):
            groups.setdefault(output, []).append(index)
        members = list(groups.values())
        quotas = _largest_remainder([len(m) for m in members], n)
        chosen = []
        for indices, quota in zip(members, quotas):
            chosen.extend(rng.sample(indices, quota))
    return sorted(chosen)


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
    return [items[i] for i in _draw([e.output for e in items], n, seed, stratify)]


def held_out(pool: Sequence[Example], train_indices: Sequence[int],
             exclude: Sequence[Example] = ()) -> list[Example]:
    """The records of ``pool`` (a train file, in file order) that a dev sample may use: not at
    ``train_indices`` (the training sample), and with an input that is neither a training
    sample's input nor the input of an example of ``exclude`` (the test file), so that a
    duplicate record cannot carry a training or test example into dev."""
    taken = set(train_indices)
    seen = {pool[i].input for i in taken} | {e.input for e in exclude}
    return [e for i, e in enumerate(pool) if i not in taken and e.input not in seen]


@dataclass
class TaskData:
    """One task, ready for training and evaluation.

    ``test`` holds the evaluation examples of the run's ``eval.split``: ``split`` says which
    (``test`` or ``dev``) and ``source`` where they come from (``"test file"``, ``"dev file"``,
    ``"held out from the train file"``), ``available`` how many records that source offered
    before subsampling (None: not counted).
    """

    info: TaskInfo
    train: list[Example]
    test: list[Example]
    split: str = "test"
    source: str = "test file"
    available: int | None = None


def draw_task(
    info: TaskInfo,
    train_pool: Sequence[Example],
    n_train: int | None,
    n_test: int | None,
    seed: int | str,
    split: str = "test",
    test_pool: Sequence[Example] | None = None,
    dev_pool: Sequence[Example] | None = None,
) -> TaskData:
    """The training sample and the evaluation sample of one task (docs/data.md, "Dev split").

    The training sample is ``n_train`` records of ``train_pool`` drawn uniformly with seed
    ``f"{seed}:{name}:train"``, whatever ``split``. ``split="test"`` evaluates on ``n_test``
    records of ``test_pool`` (seed ``":test"``); ``split="dev"`` on ``n_test`` records of
    ``dev_pool`` when there is one (a task's own dev file), else of :func:`held_out` records
    of ``train_pool`` (outside the training sample and the test pool), both with seed
    ``":dev"``. Evaluation samples are stratified by answer when ``info.metric`` is accuracy.
    Raises ConfigError when ``split`` is not test or dev, when there is no test pool for
    ``split="test"``, or when no record is left for dev.
    """
    name = info.name
    train_pool = list(train_pool)
    train_indices = _draw([e.output for e in train_pool], n_train, f"{seed}:{name}:train", False)
    train = [train_pool[i] for i in train_indices]
    stratify = info.metric == "accuracy"
    if split == "test":
        if test_pool is None:
            raise ConfigError(f"task {name}: no test records to evaluate on (eval.split: dev "
                              f"evaluates on records held out from the train file)")
        pool, source, key = list(test_pool), "test file", "test"
    elif split == "dev":
        if dev_pool is not None:
            pool, source = list(dev_pool), "dev file"
        else:
            pool, source = held_out(train_pool, train_indices, test_pool or ()), \
                "held out from the train file"
            if not pool:
                raise ConfigError(
                    f"eval.split: dev: task {name}: no record of the train file is left outside "
                    f"the training sample (data.n_train takes {len(train)} of "
                    f"{len(train_pool)}); set data.n_train lower")
        key = "dev"
    else:
        raise ConfigError(f"eval.split: {split!r} is not test or dev")
    test = subsample(pool, n_test, f"{seed}:{name}:{key}", stratify=stratify)
    return TaskData(info=info, train=train, test=test, split=split, source=source,
                    available=len(pool))


def load_task_data(
    data_dir: str | os.PathLike[str],
    task: str,
    n_train: int | None,
    n_test: int | None,
    seed: int | str,
    split: str = "test",
    default_metric: str | None = None,
) -> TaskData:
    """Load a benchmark task's train file and its evaluation examples, each subsampled.

    ``split="test"`` evaluates on the test file; ``split="dev"`` on records held out from the
    train file (the benchmark's dev files overlap its test files): see :func:`draw_task`,
    which also gives the seeds (changing ``n_train`` never changes the test sample).
    ``default_metric`` lets a task outside the registry through (see :func:`get_task_info`).
    """
    info = get_task_info(task, default_metric=default_metric)   # info.name: the canonical name
    train = load_split(data_dir, task, "train")
    has_test = split == "test" or "test" in list_tasks(data_dir).get(canonical_task_name(task), {})
    test = load_split(data_dir, task, "test") if has_test else None
    return draw_task(info, train, n_train, n_test, seed, split, test_pool=test)
