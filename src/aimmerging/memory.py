"""Replay memory M: a small, seeded, uniform sample of every finished task (SPEC.md).

After task k, ``m_k = max(1, round(memory_ratio * N_k))`` of its N_k training
examples are stored (``memory_size`` replaces that count when set); a task with
fewer examples than its quota is stored whole. The draw is uniform without
replacement with ``random.Random(f"{seed}:{task}")``, so it depends only on the
seed and the task name, never on Python's hash randomisation or on the order in
which tasks arrive. Stored examples keep their file order.

``round`` rounds halves up here (2.5 -> 3), as the controller's does (docs/algorithm.md).

:class:`TokenizedMemory` is the same memory for rows a user tokenized (mappings with
``input_ids``), as the Trainer callback keeps them; its draw is the same.
"""

from __future__ import annotations

import math
import random
from typing import Any, Iterable

from aimmerging.data.formats import Example

__all__ = ["ReplayMemory", "TokenizedMemory", "memory_from_state"]

_STATE_VERSION = 1


def _check_ratio(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"memory_ratio must be a number in (0, 1], got {value!r}")
    if not 0 < value <= 1:
        raise ValueError(f"memory_ratio must be in (0, 1], got {value!r}")
    return float(value)


def _check_size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"memory_size must be an integer >= 1 or None, got {value!r}")
    return value


def _check_seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"seed must be an integer, got {value!r}")
    return value


class ReplayMemory:
    """Examples kept from earlier tasks, sampled uniformly for history loss and rehearsal."""

    #: what the memory holds, in its state: ``text`` (Examples) or ``tokenized`` (rows)
    kind = "text"

    def __init__(self, memory_ratio: float = 0.02, memory_size: int | None = None, seed: int = 0):
        self.memory_ratio = _check_ratio(memory_ratio)
        self.memory_size = _check_size(memory_size)
        self.seed = _check_seed(seed)
        self._store: dict[str, list[Example]] = {}

    # ------------------------------------------------------------------ filling

    def quota(self, n_examples: int) -> int:
        """How many of ``n_examples`` the memory keeps (before capping at ``n_examples``)."""
        if self.memory_size is not None:
            return self.memory_size
        return max(1, math.floor(self.memory_ratio * n_examples + 0.5 + 1e-9))

    def add_task(self, task: str, examples: list) -> list:
        """Store the sample of a finished task and return it (in file order).

        Raises:
            ValueError: an empty or repeated task name, no examples, or an example that is
                not an :class:`Example` (one line naming it).
        """
        items = self._checked(task, examples)
        stored = [items[i] for i in self._draw(task, len(items))]
        self._store[task] = stored
        return list(stored)

    def add_whole(self, task: str, examples: list) -> None:
        """Store every one of ``examples`` under ``task`` (a memory given as it is, not a
        sample); the checks and errors of :meth:`add_task`."""
        self._store[task] = self._checked(task, examples)

    def _checked(self, task: str, examples: list) -> list:
        """``examples`` as a list, each checked by :meth:`_item`; ValueError for an empty or
        repeated task name or no examples."""
        if not isinstance(task, str) or not task:
            raise ValueError(f"task must be a non-empty string, got {task!r}")
        if task in self._store:
            raise ValueError(f"task {task!r} is already in the replay memory")
        items = [self._item(index, item, task) for index, item in enumerate(examples)]
        if not items:
            raise ValueError(f"task {task!r} has no examples to store")
        return items

    def _draw(self, task: str, n_items: int) -> list[int]:
        """The indices (sorted) of the sample kept of a task of ``n_items`` examples."""
        count = min(self.quota(n_items), n_items)
        rng = random.Random(f"{self.seed}:{task}")
        return sorted(rng.sample(range(n_items), count))

    def _item(self, index: int, item: Any, task: str) -> Any:
        """``item`` checked for storing (ValueError naming it otherwise)."""
        if not isinstance(item, Example):
            raise ValueError(f"examples[{index}] of task {task!r} is not an Example")
        return item

    # ------------------------------------------------------------------ reading

    @property
    def tasks(self) -> list[str]:
        """Stored tasks, in the order they were added."""
        return list(self._store)

    def examples(self, tasks: Iterable[str] | None = None) -> list[Example]:
        """Stored examples of ``tasks`` (all tasks when None), task by task."""
        names = self.tasks if tasks is None else list(tasks)
        out: list[Example] = []
        for name in names:
            if name not in self._store:
                raise KeyError(f"task {name!r} is not in the replay memory")
            out.extend(self._store[name])
        return out

    def __len__(self) -> int:
        return sum(len(v) for v in self._store.values())

    def __repr__(self) -> str:
        return (
            f"ReplayMemory(memory_ratio={self.memory_ratio}, memory_size={self.memory_size}, "
            f"seed={self.seed}, tasks={self.tasks}, examples={len(self)})"
        )

    def sample_batch(self, batch_size: int, rng: random.Random) -> list[Example]:
        """``batch_size`` stored examples, uniform over all tasks' examples, no repeats.

        The batch is smaller when the memory holds fewer examples (empty when empty).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        pool = self.examples()
        return rng.sample(pool, min(batch_size, len(pool)))

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (configuration and stored examples)."""
        return {
            "version": _STATE_VERSION,
            "memory_ratio": self.memory_ratio,
            "memory_size": self.memory_size,
            "seed": self.seed,
            "kind": self.kind,
            "tasks": [
                {"task": name, "examples": [self._record(e) for e in stored]}
                for name, stored in self._store.items()
            ],
        }

    @staticmethod
    def _record(item: Any) -> dict:
        return {"id": item.id, "input": item.input, "output": item.output}

    @staticmethod
    def _from_record(rec: Any, where: str) -> Any:
        fields = [rec.get(k) if isinstance(rec, dict) else None for k in ("id", "input", "output")]
        if not all(isinstance(f, str) for f in fields):
            raise ValueError(f"{where} needs string 'id', 'input' and 'output'")
        return Example(*fields)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace configuration and contents with those of ``state``."""
        if not isinstance(state, dict):
            raise ValueError("replay memory state must be a dict")
        version = state.get("version")
        if version != _STATE_VERSION:
            raise ValueError(f"replay memory state: unsupported version {version!r}")
        if state.get("kind", "text") != self.kind:
            raise ValueError(f"replay memory state: it holds {state.get('kind')} examples, "
                             f"this memory {self.kind} ones")
        ratio = _check_ratio(state.get("memory_ratio"))
        size = _check_size(state.get("memory_size"))
        seed = _check_seed(state.get("seed"))
        entries = state.get("tasks")
        if not isinstance(entries, list):
            raise ValueError("replay memory state: 'tasks' must be a list")
        store: dict[str, list[Example]] = {}
        for t_index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("task"), str):
                raise ValueError(f"replay memory state: tasks[{t_index}] needs a string 'task'")
            name = entry["task"]
            if name in store:
                raise ValueError(f"replay memory state: task {name!r} appears twice")
            records = entry.get("examples")
            if not isinstance(records, list):
                raise ValueError(f"replay memory state: tasks[{t_index}].examples must be a list")
            store[name] = [self._from_record(rec, f"replay memory state: tasks[{t_index}]."
                                                  f"examples[{e_index}]")
                           for e_index, rec in enumerate(records)]
        self.memory_ratio, self.memory_size, self.seed = ratio, size, seed
        self._store = store

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "ReplayMemory":
        memory = cls()
        memory.load_state_dict(state)
        return memory

    def emptied(self, kind: type) -> "ReplayMemory":
        """An empty memory of class ``kind`` with this one's ratio, size and seed."""
        return kind(self.memory_ratio, self.memory_size, self.seed)


def _plain(value: Any) -> Any:
    """A row's value as JSON-able Python (tensors and arrays as nested lists)."""
    return value.tolist() if hasattr(value, "tolist") else value


class TokenizedMemory(ReplayMemory):
    """A :class:`ReplayMemory` of tokenized rows: mappings with a non-empty ``input_ids``
    (and usually ``attention_mask`` and ``labels``), batched by the Trainer's data collator.

    The draw is :class:`ReplayMemory`'s; rows are stored as plain lists (tensors converted),
    so that the state is JSON.
    """

    kind = "tokenized"

    def _item(self, index: int, item: Any, task: str) -> dict:
        if not hasattr(item, "keys") or "input_ids" not in item:
            found = sorted(map(str, item.keys())) if hasattr(item, "keys") else type(item).__name__
            raise ValueError(f"examples[{index}] of task {task!r} is not a tokenized row (a "
                             f"mapping with 'input_ids'); it has {found}")
        row = {str(k): _plain(v) for k, v in item.items()}
        ids = row["input_ids"]
        if not isinstance(ids, list) or not ids:
            raise ValueError(f"examples[{index}] of task {task!r}: 'input_ids' is empty or not "
                             f"a list of token ids")
        labels = row.get("labels")
        if isinstance(labels, list) and labels and all(v == -100 for v in labels):
            raise ValueError(f"examples[{index}] of task {task!r}: every label is -100, so it "
                             f"has no token to rehearse (was its answer cut off by truncation?); "
                             f"drop such rows first")
        return row

    @staticmethod
    def _record(item: Any) -> dict:
        return item

    @staticmethod
    def _from_record(rec: Any, where: str) -> Any:
        if not isinstance(rec, dict) or not isinstance(rec.get("input_ids"), list):
            raise ValueError(f"{where} needs a list 'input_ids'")
        return rec


def memory_from_state(state: dict[str, Any]) -> ReplayMemory:
    """The :class:`ReplayMemory` or :class:`TokenizedMemory` that ``state`` (a
    :meth:`~ReplayMemory.state_dict`) describes."""
    kind = state.get("kind", "text") if isinstance(state, dict) else None
    cls = {"text": ReplayMemory, "tokenized": TokenizedMemory}.get(kind)
    if cls is None:
        raise ValueError(f"replay memory state: unknown kind {kind!r}")
    return cls.from_state_dict(state)
