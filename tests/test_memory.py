"""Replay memory: quota, seeded uniform draw, batches, state round trip."""

from __future__ import annotations

import json
import random

import pytest

from aimmerging.data import Example
from aimmerging.memory import ReplayMemory


def _task(name: str, n: int) -> list[Example]:
    return [Example(f"{name}_{i}", f"input {i}", f"out {i % 3}") for i in range(n)]


def test_ratio_quota() -> None:
    memory = ReplayMemory(memory_ratio=0.02, seed=0)
    stored = memory.add_task("dbpedia", _task("dbpedia", 1000))
    assert len(stored) == 20  # round(0.02 * 1000)
    assert len(memory.add_task("cb", _task("cb", 250))) == 5  # round(5.0)
    assert len(memory.add_task("tiny", _task("tiny", 10))) == 1  # max(1, round(0.2))
    # halves round up: 0.02 * 75 = 1.5 -> 2, 0.02 * 125 = 2.5 -> 3
    assert len(memory.add_task("a", _task("a", 75))) == 2
    assert len(memory.add_task("b", _task("b", 125))) == 3
    assert memory.tasks == ["dbpedia", "cb", "tiny", "a", "b"]
    assert len(memory) == 20 + 5 + 1 + 2 + 3


def test_absolute_size_overrides_ratio_and_small_task_is_stored_whole() -> None:
    memory = ReplayMemory(memory_ratio=0.5, memory_size=8, seed=3)
    assert len(memory.add_task("big", _task("big", 1000))) == 8
    small = _task("small", 5)
    assert memory.add_task("small", small) == small


def test_draw_is_uniform_subset_in_file_order_and_seeded() -> None:
    data = _task("yelp", 500)
    first = ReplayMemory(memory_ratio=0.1, seed=11).add_task("yelp", data)
    again = ReplayMemory(memory_ratio=0.1, seed=11).add_task("yelp", data)
    other_seed = ReplayMemory(memory_ratio=0.1, seed=12).add_task("yelp", data)
    assert first == again and first != other_seed
    assert len(set(first)) == 50 and set(first) <= set(data)
    positions = [data.index(e) for e in first]
    assert positions == sorted(positions)
    # the draw of a task depends on (seed, task name) only, not on what came before
    memory = ReplayMemory(memory_ratio=0.1, seed=11)
    memory.add_task("amazon", _task("amazon", 300))
    assert memory.add_task("yelp", data) == first
    # known value: pins the seeding scheme random.Random(f"{seed}:{task}")
    rng = random.Random("11:yelp")
    assert positions == sorted(rng.sample(range(500), 50))


def test_examples_and_tasks_filter() -> None:
    memory = ReplayMemory(memory_size=2, seed=0)
    a = memory.add_task("a", _task("a", 10))
    b = memory.add_task("b", _task("b", 10))
    assert memory.examples() == a + b
    assert memory.examples(["b"]) == b
    with pytest.raises(KeyError):
        memory.examples(["c"])


def test_sample_batch() -> None:
    memory = ReplayMemory(memory_size=5, seed=0)
    memory.add_task("a", _task("a", 100))
    memory.add_task("b", _task("b", 100))
    batch = memory.sample_batch(4, random.Random(0))
    assert len(batch) == 4 and len(set(batch)) == 4
    assert set(batch) <= set(memory.examples())
    assert batch == memory.sample_batch(4, random.Random(0))
    whole = memory.sample_batch(64, random.Random(1))
    assert sorted(e.id for e in whole) == sorted(e.id for e in memory.examples())
    assert ReplayMemory().sample_batch(8, random.Random(0)) == []
    with pytest.raises(ValueError, match="batch_size"):
        memory.sample_batch(0, random.Random(0))


def test_sample_batch_is_uniform_over_examples() -> None:
    memory = ReplayMemory(memory_size=1, seed=0)
    memory.add_task("a", _task("a", 10))  # 1 example
    memory.add_task("b", _task("b", 200))  # 1 example
    memory.memory_size = 3
    memory.add_task("c", _task("c", 10))  # 3 examples -> 5 stored
    rng = random.Random(5)
    counts: dict[str, int] = {}
    for _ in range(5000):
        (e,) = memory.sample_batch(1, rng)
        counts[e.id[0]] = counts.get(e.id[0], 0) + 1
    assert abs(counts["c"] / 5000 - 0.6) < 0.03  # by example, not by task


def test_state_round_trip() -> None:
    memory = ReplayMemory(memory_ratio=0.05, seed=4)
    memory.add_task("x", _task("x", 100))
    memory.add_task("y", [Example("y_0", "ünïcode \n input", " spaced")])
    state = memory.state_dict()
    text = json.dumps(state)  # JSON-serialisable
    restored = ReplayMemory.from_state_dict(json.loads(text))
    assert restored.state_dict() == state
    assert restored.tasks == ["x", "y"] and restored.examples() == memory.examples()
    assert (restored.memory_ratio, restored.memory_size, restored.seed) == (0.05, None, 4)
    other = ReplayMemory(memory_size=3, seed=9)
    other.add_task("z", _task("z", 10))
    other.load_state_dict(state)
    assert other.tasks == ["x", "y"] and other.memory_size is None


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"memory_ratio": 0}, "memory_ratio"),
        ({"memory_ratio": 1.5}, "memory_ratio"),
        ({"memory_ratio": -0.1}, "memory_ratio"),
        ({"memory_ratio": float("nan")}, "memory_ratio"),
        ({"memory_ratio": True}, "memory_ratio"),
        ({"memory_size": 0}, "memory_size"),
        ({"memory_size": 2.5}, "memory_size"),
        ({"seed": "1"}, "seed"),
    ],
)
def test_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ReplayMemory(**kwargs)


def test_ratio_one_is_allowed_and_misuse_is_refused() -> None:
    memory = ReplayMemory(memory_ratio=1.0)
    assert len(memory.add_task("a", _task("a", 7))) == 7
    with pytest.raises(ValueError, match="already"):
        memory.add_task("a", _task("a", 7))
    with pytest.raises(ValueError, match="no examples"):
        memory.add_task("b", [])


def test_bad_state_is_refused() -> None:
    state = ReplayMemory().state_dict()
    for broken in (
        {**state, "version": 99},
        {**state, "memory_ratio": 0},
        {**state, "tasks": [{"task": "a", "examples": [{"id": "1", "input": "x"}]}]},
        {**state, "tasks": [{"task": "a", "examples": []}, {"task": "a", "examples": []}]},
    ):
        with pytest.raises(ValueError):
            ReplayMemory.from_state_dict(broken)
