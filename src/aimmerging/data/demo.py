"""A built-in, deterministic stream of four small text tasks for ``aimmerging demo``.

Each task has its own instruction and its own answer set, so that a model trained
on a later task and forgetting an earlier one shows it in the scores. The records
are generated from fixed word lists with a seeded generator: no download, no data.
"""

from __future__ import annotations

import random

from .formats import Example
from .registry import TaskInfo
from .sampling import TaskData

_SUBJECTS = ["My neighbour", "The teacher", "Our guide", "A friend", "The reporter", "My cousin",
             "The driver", "A student", "The chef", "Her brother", "The old farmer", "My aunt"]
#: test sentences use subjects never seen in training, so no test input is a training input
_TRAIN_SUBJECTS, _TEST_SUBJECTS = _SUBJECTS[:8], _SUBJECTS[8:]

_TASKS = {
    "demo_sentiment": (
        "Is the feeling of the sentence positive or negative? Option: positive, negative.",
        {"positive": ["loved", "enjoyed", "was delighted by", "praised", "adored"],
         "negative": ["hated", "disliked", "was annoyed by", "complained about", "despised"]},
        "{s} {w} the {o} yesterday.",
        ["concert", "meal", "trip", "film", "lecture", "game"]),
    "demo_topic": (
        "What is the topic of the sentence? Option: sport, food, music, science.",
        {"sport": ["football match", "tennis final", "marathon", "swimming race"],
         "food": ["pasta recipe", "bakery", "soup", "cheese market"],
         "music": ["guitar solo", "piano recital", "jazz band", "choir"],
         "science": ["telescope", "chemistry lab", "physics lecture", "fossil dig"]},
        "{s} talked about the {w} for an hour.", None),
    "demo_color": (
        "Which colour is mentioned in the sentence? Option: red, blue, green, yellow.",
        {c: [c] for c in ("red", "blue", "green", "yellow")},
        "{s} painted the {o} {w} last week.",
        ["door", "fence", "bicycle", "kitchen", "boat", "wall"]),
    "demo_animal": (
        "Which animal does the sentence describe? Option: cat, dog, horse, owl.",
        {"cat": ["purred on the sofa", "chased a mouse"], "dog": ["barked at the postman",
         "fetched a stick"], "horse": ["galloped across the field", "pulled the cart"],
         "owl": ["hooted at midnight", "hunted in the dark"]},
        "{s} saw an animal that {w}.", None),
}

DEMO_TASKS = tuple(_TASKS)


def _records(name: str, n: int, rng: random.Random, subjects: list[str]) -> list[Example]:
    instruction, classes, template, objects = _TASKS[name]
    labels = sorted(classes)
    out = []
    for i in range(n):
        label = labels[i % len(labels)]
        word = rng.choice(classes[label])
        obj = rng.choice(objects) if objects else ""
        sentence = template.format(s=rng.choice(subjects), w=word, o=obj)
        out.append(Example(id=f"{name}_{i}", input=f"{instruction}\n{sentence}\nAnswer:", output=label))
    rng.shuffle(out)
    return out


def demo_stream(n_train: int = 96, n_test: int = 40, seed: int = 0) -> list[TaskData]:
    """The demo tasks in order; test sentences have subjects that training never shows.

    Args:
        n_train: training examples per task.
        n_test: test examples per task (balanced over labels).
        seed: the generator seed (the same seed gives the same records).
    """
    stream = []
    for k, name in enumerate(DEMO_TASKS):
        labels = tuple(sorted(_TASKS[name][1]))
        info = TaskInfo(name=name, benchmark="demo", metric="accuracy", labels=labels)
        train = _records(name, n_train, random.Random(f"{seed}:{name}:train"), _TRAIN_SUBJECTS)
        test = _records(name, n_test, random.Random(f"{seed}:{name}:test"), _TEST_SUBJECTS)
        stream.append(TaskData(info=info, train=train, test=test))
    return stream
