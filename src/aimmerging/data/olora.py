"""The O-LoRA CL_Benchmark prompt template, as the AimMerging data was built with it.

The AimMerging files hold, for each Long Sequence task::

    input  = INSTRUCTION + "Option: " + ", ".join(labels) + ".\\n" + sentence + "\\nAnswer:"
    output = label
    id     = f"{ID_PREFIX}_{index}"

``INSTRUCTION`` depends on the task's category (table below, copied from the data:
every record of a task has the same first line), ``labels`` is the task's
``labels.json`` in its order, and ``sentence`` is the O-LoRA record's text verbatim
(O-LoRA sentences of the topic and review tasks end with "\\n", which gives their
"\\n\\nAnswer:"). This module builds that record from an O-LoRA ``{"sentence",
"label"}`` record and, for tests and tools, takes an AimMerging record apart again.
"""

from __future__ import annotations

__all__ = [
    "ANSWER_CUE",
    "CATEGORY_INSTRUCTIONS",
    "TASK_CATEGORY",
    "ID_PREFIX",
    "instruction_line",
    "build_input",
    "split_input",
    "record_id",
]

ANSWER_CUE = "\nAnswer:"

# O-LoRA's category folders and their instruction (each ends with one blank).
CATEGORY_INSTRUCTIONS: dict[str, str] = {
    "NLI": 'What is the logical relationship between the "sentence 1" and the "sentence 2"? '
    "Choose one from the option. ",
    "QQP": 'Whether the "first sentence" and the "second sentence" have the same meaning? '
    "Choose one from the option. ",
    "SC": "What is the sentiment of the following paragraph? Choose one from the option. ",
    "TC": "What is the topic of the following paragraph? Choose one from the option. ",
    "BoolQA": "According to the following passage, is the question true or false? "
    "Choose one from the option. ",
    "MultiRC": "According to the following passage and question, is the candidate answer "
    "true or false? Choose one from the option. ",
    "WiC": "Given a word and two sentences, whether the word is used with the same sense "
    "in both sentence? Choose one from the option. ",
}
# COPA uses the BoolQA instruction in the AimMerging data (and lives in a "COPA" folder).
CATEGORY_INSTRUCTIONS["COPA"] = CATEGORY_INSTRUCTIONS["BoolQA"]

# Canonical task name -> category whose instruction the task uses.
TASK_CATEGORY: dict[str, str] = {
    "yelp": "SC", "amazon": "SC", "imdb": "SC", "sst-2": "SC",
    "dbpedia": "TC", "yahoo": "TC", "agnews": "TC",
    "mnli": "NLI", "rte": "NLI", "cb": "NLI",
    "qqp": "QQP",
    "wic": "WiC",
    "copa": "BoolQA", "boolqa": "BoolQA",
    "multirc": "MultiRC",
}

# Canonical task name -> the spelling of the AimMerging ids ("BoolQA_0", "SST-2_0", "yelp_0").
ID_PREFIX: dict[str, str] = {
    "yelp": "yelp", "amazon": "amazon", "dbpedia": "dbpedia", "yahoo": "yahoo",
    "agnews": "agnews", "mnli": "MNLI", "qqp": "QQP", "rte": "RTE", "sst-2": "SST-2",
    "wic": "WiC", "cb": "CB", "copa": "COPA", "boolqa": "BoolQA", "multirc": "MultiRC",
    "imdb": "IMDB",
}


def _category_key(category: str | None) -> str | None:
    if category is None:
        return None
    lowered = category.lower()
    for key in CATEGORY_INSTRUCTIONS:
        if key.lower() == lowered:
            return key
    return None


def instruction_line(task: str, labels: list[str] | tuple[str, ...], category: str | None = None) -> str:
    """The first line of the input, newline included.

    ``task`` is a canonical name; a task outside the table uses ``category`` (the
    O-LoRA category folder it sits in). Raises ``KeyError`` when neither is known.
    """
    key = TASK_CATEGORY.get(task) or _category_key(category)
    if key is None:
        raise KeyError(task)
    return CATEGORY_INSTRUCTIONS[key] + "Option: " + ", ".join(labels) + ".\n"


def build_input(
    task: str, sentence: str, labels: list[str] | tuple[str, ...], category: str | None = None
) -> str:
    """The AimMerging ``input`` of one O-LoRA sentence."""
    return instruction_line(task, labels, category) + sentence + ANSWER_CUE


def split_input(text: str) -> tuple[str, list[str], str]:
    """Take an AimMerging Long Sequence input apart: (instruction, labels, sentence).

    The inverse of :func:`build_input`: ``instruction`` is the category text (up to
    and including the blank before "Option: "), ``labels`` are the options of the
    first line, ``sentence`` the text between the first line and the answer cue.
    Raises ``ValueError`` when the text does not have that shape.
    """
    head, sep, rest = text.partition("\n")
    if not sep or not rest.endswith(ANSWER_CUE):
        raise ValueError("input does not look like '<instruction line>\\n<sentence>\\nAnswer:'")
    marker = "Option: "
    pos = head.rfind(marker)
    if pos < 0 or not head.endswith("."):
        raise ValueError("instruction line has no 'Option: a, b.' list")
    instruction = head[:pos]
    labels = head[pos + len(marker) : -1].split(", ")
    sentence = rest[: -len(ANSWER_CUE)]
    return instruction, labels, sentence


def record_id(task: str, index: int, folder_name: str | None = None) -> str:
    """The id the AimMerging data gives record ``index`` of ``task``."""
    prefix = ID_PREFIX.get(task) or folder_name or task
    return f"{prefix}_{index}"
