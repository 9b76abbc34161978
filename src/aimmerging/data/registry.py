"""The benchmark tasks: canonical names, metric, label set, and the task orders.

Canonical names are the lower-case file stems of the AimMerging data
(``data_longsequence/train/sst-2_T5.json`` -> ``sst-2``; ``task363_T5.json`` ->
``task363``). :func:`canonical_task_name` maps other spellings onto them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from aimmerging.errors import ConfigError, did_you_mean

__all__ = [
    "TaskInfo",
    "TASKS",
    "ORDERS",
    "METRICS",
    "canonical_task_name",
    "get_task_info",
    "resolve_order",
]

METRICS = ("accuracy", "rougeL")


@dataclass(frozen=True)
class TaskInfo:
    """What the rest of the project needs to know about one task."""

    name: str
    benchmark: str  # "standard_cl" | "long_sequence" | "superni" | "custom"
    metric: str  # "accuracy" | "rougeL"
    labels: tuple[str, ...] | None


_SENTIMENT5 = ("very negative", "negative", "neutral", "positive", "very positive")

# Labels are the options of each task's instruction line, in the order written there.
_LONG_SEQUENCE_LABELS: dict[str, tuple[str, ...]] = {
    "yelp": _SENTIMENT5,
    "amazon": _SENTIMENT5,
    "dbpedia": (
        "Company", "Educational Institution", "Artist", "Athlete", "Office Holder",
        "Mean of Transportation", "Building", "Natural Place", "Village", "Animal",
        "Plant", "Album", "Film", "Written Work",
    ),
    "yahoo": (
        "Society & Culture", "Science & Mathematics", "Health", "Education & Reference",
        "Computers & Internet", "Sports", "Business & Finance", "Entertainment & Music",
        "Family & Relationships", "Politics & Government",
    ),
    "agnews": ("World", "Sports", "Business", "Science or Technology"),
    "mnli": ("neutral", "entailment", "contradiction"),
    "qqp": ("False", "True"),
    "rte": ("contradiction", "entailment"),
    "sst-2": ("Good", "Bad"),
    "wic": ("True", "False"),
    "cb": ("entailment", "contradiction", "neutral"),
    "copa": ("A", "B"),
    "boolqa": ("True", "False"),
    "multirc": ("False", "True"),
    "imdb": ("Good", "Bad"),
}
# The five tasks of the Standard CL benchmark (the data README); the rest are Long Sequence only.
_STANDARD_CL = ("yelp", "amazon", "dbpedia", "yahoo", "agnews")

# SuperNI: full Natural-Instructions names, the metric of the paper's tables 10-11,
# and the label set where the outputs are single letters (read from the data).
_SUPERNI: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    "task002": ("task002_quoref_answer_generation", "rougeL", None),
    "task073": ("task073_commonsenseqa_answer_generation", "rougeL", ("A", "B", "C", "D", "E")),
    "task181": ("task181_outcome_extraction", "rougeL", None),
    "task363": ("task363_sst2_polarity_classification", "accuracy", ("P", "N")),
    "task511": ("task511_reddit_tifu_long_text_summarization", "rougeL", None),
    "task591": ("task591_sciq_answer_generation", "rougeL", None),
    "task639": ("task639_multi_woz_user_utterance_generation", "rougeL", None),
    "task748": ("task748_glucose_reverse_cause_event_detection", "rougeL", None),
    "task875": ("task875_emotion_classification", "accuracy", ("s", "j", "l", "a", "f")),
    "task1290": ("task1290_xsum_summarization", "rougeL", None),
    "task1510": ("task1510_evalution_relation_extraction", "rougeL", None),
    "task1572": ("task1572_samsum_summary", "rougeL", None),
    "task1590": ("task1590_diplomacy_text_generation", "rougeL", None),
    "task1687": ("task1687_sentiment140_classification", "accuracy", ("n", "p")),
    "task1729": ("task1729_personachat_generate_next", "rougeL", None),
}


def _build_tasks() -> dict[str, TaskInfo]:
    tasks: dict[str, TaskInfo] = {}
    for name, labels in _LONG_SEQUENCE_LABELS.items():
        bench = "standard_cl" if name in _STANDARD_CL else "long_sequence"
        tasks[name] = TaskInfo(name, bench, "accuracy", labels)
    for name, (_full, metric, labels) in _SUPERNI.items():
        tasks[name] = TaskInfo(name, "superni", metric, labels)
    return tasks


TASKS: dict[str, TaskInfo] = _build_tasks()

# Spellings seen in the literature and in the O-LoRA / AimMerging folders, after
# _squash() (lower case, no blanks, "-" or "_"). Canonical names map to themselves.
_ALIASES: dict[str, str] = {
    "ag": "agnews", "agnews": "agnews", "agnewstopic": "agnews",
    "sst2": "sst-2", "sst": "sst-2",
    "boolq": "boolqa", "boolqa": "boolqa",
    "dbpedia": "dbpedia", "dbpedia14": "dbpedia",
    "yahoo": "yahoo", "yahooanswers": "yahoo", "yahooanswerstopics": "yahoo",
    "amazon": "amazon", "amazonreviewfull": "amazon", "amazonreviews": "amazon",
    "yelp": "yelp", "yelpreviewfull": "yelp", "yelpreviews": "yelp",
    "mnli": "mnli", "multinli": "mnli",
    "qqp": "qqp", "rte": "rte", "cb": "cb", "wic": "wic", "copa": "copa",
    "multirc": "multirc", "imdb": "imdb",
}

_TASK_RE = re.compile(r"^task(\d+)(?:[_\-\s].*)?$")


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


def canonical_task_name(name: str) -> str:
    """Map any accepted spelling of a task onto its canonical name.

    Matching ignores case, blanks, ``-`` and ``_`` (``SST-2``, ``sst2``, ``SST2`` ->
    ``sst-2``; ``AG News``, ``ag`` -> ``agnews``; ``boolq`` -> ``boolqa``), strips a
    ``.json`` and a ``_T5`` suffix, and turns a full SuperNI name
    (``task363_sst2_polarity_classification``) into its number (``task363``).
    A name that is not in the registry comes back stripped and lower-cased (so a
    user's own task folder still has a stable key); :func:`get_task_info` is where
    unknown names are rejected.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"task name must be a non-empty string, got {name!r}")
    text = name.strip()
    if text.lower().endswith(".json"):
        text = text[: -len(".json")]
    if text.lower().endswith("_t5"):
        text = text[: -len("_t5")]
    lowered = text.lower()
    match = _TASK_RE.match(lowered)
    if match:
        return f"task{int(match.group(1)):03d}"
    squashed = _squash(lowered)
    if squashed in _ALIASES:
        return _ALIASES[squashed]
    return lowered


def get_task_info(name: str, default_metric: str | None = None) -> TaskInfo:
    """The :class:`TaskInfo` of a task, by any accepted spelling.

    An unknown task raises :class:`ConfigError` naming it and listing the known
    ones, unless ``default_metric`` is given: then it is a user task and gets
    ``TaskInfo(canonical_name, "custom", default_metric, None)``.
    """
    canonical = canonical_task_name(name)
    info = TASKS.get(canonical)
    if info is not None:
        return info
    if default_metric is not None:
        if default_metric not in METRICS:
            raise ConfigError(
                f"unknown metric {default_metric!r} for task {name!r}; known: {', '.join(METRICS)}"
            )
        return TaskInfo(canonical, "custom", default_metric, None)
    raise ConfigError(f"unknown task {name!r}{did_you_mean(name, TASKS)}; known tasks: {', '.join(TASKS)}")


ORDERS: dict[int, tuple[str, ...]] = {
    1: ("dbpedia", "amazon", "yahoo", "agnews"),
    2: ("dbpedia", "amazon", "agnews", "yahoo"),
    3: ("yahoo", "amazon", "agnews", "dbpedia"),
    4: ("mnli", "cb", "wic", "copa", "qqp", "boolqa", "rte", "imdb", "yelp", "amazon",
        "sst-2", "dbpedia", "agnews", "multirc", "yahoo"),
    5: ("yelp", "amazon", "mnli", "cb", "copa", "qqp", "rte", "imdb", "sst-2", "dbpedia",
        "agnews", "yahoo", "multirc", "boolqa", "wic"),
    6: ("task1572", "task363", "task1290", "task181", "task002", "task1510", "task639",
        "task1729", "task073", "task1590", "task748", "task511", "task591", "task1687",
        "task875"),
    7: ("task748", "task073", "task1590", "task639", "task1572", "task1687", "task591",
        "task363", "task1510", "task1729", "task181", "task511", "task002", "task1290",
        "task875"),
}

_ORDER_RE = re.compile(r"^(?:order)?[\s_\-]*(\d+)$")


def resolve_order(order: int | str | Iterable[str]) -> list[str]:
    """The task sequence of an order.

    Accepts an order number (``4``, ``"4"``, ``"order4"``, ``"order_4"``), a
    comma-separated string of task names, or a list of task names. Names are
    canonicalised; unknown names are kept (user tasks) but duplicates and empty
    sequences raise :class:`ConfigError`.
    """
    if isinstance(order, bool):
        raise ConfigError(f"task order must be a number 1-7 or a list of tasks, got {order!r}")
    if isinstance(order, int):
        if order not in ORDERS:
            raise ConfigError(f"unknown task order {order}; known orders: {', '.join(map(str, ORDERS))}")
        return list(ORDERS[order])
    if isinstance(order, str):
        match = _ORDER_RE.match(order.strip().lower())
        if match:
            return resolve_order(int(match.group(1)))
        names = [part for part in (p.strip() for p in order.split(",")) if part]
    else:
        try:
            names = list(order)
        except TypeError:
            raise ConfigError(
                f"task order must be a number 1-7 or a list of tasks, got {order!r}"
            ) from None
    if not names:
        raise ConfigError("task order is empty")
    resolved = [canonical_task_name(n) for n in names]
    seen: set[str] = set()
    for original, canonical in zip(names, resolved):
        if canonical in seen:
            raise ConfigError(f"task order lists {canonical!r} twice (as {original!r})")
        seen.add(canonical)
    return resolved
