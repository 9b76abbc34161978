"""A task given by its files (:class:`~aimmerging.data.spec.TaskSpec`) -> examples -> TaskData.

Each record becomes an :class:`~aimmerging.data.formats.Example`: ``input`` is the record's
``spec.input`` column, or ``spec.template`` with its columns pasted in; ``output`` is the
``spec.output`` column; ``id`` the ``spec.id`` column or ``<name>_<index>``. Numbers and
booleans are written as text; the input column, the output and the id must not be empty,
and a record without one of the columns is refused, each with one line naming the file, the
record and the field (:class:`~aimmerging.errors.DataError`).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from aimmerging.data.formats import Example
from aimmerging.data.registry import TaskInfo
from aimmerging.data.sampling import TaskData, draw_task
from aimmerging.data.sources import Records, read_source
from aimmerging.data.spec import Source, SourceSpec, TaskSpec, render_template
from aimmerging.errors import ConfigError, DataError

__all__ = ["ROLES", "task_info", "role_source", "load_role", "load_custom_task", "overlap_note"]

ROLES = ("train", "dev", "test")

log = logging.getLogger(__name__)


def overlap_note(name: str, train: list[Example], evaluation: list[Example],
                 split: str = "test") -> Optional[str]:
    """A warning line when records of ``evaluation`` have the input of a training record
    (the same file twice, or leaked records), else None: their scores would measure
    memorisation, not learning."""
    seen = {ex.input.strip() for ex in train}
    shared = sum(ex.input.strip() in seen for ex in evaluation)
    if not shared:
        return None
    return (f"data.tasks: task {name}: {shared} of {len(evaluation)} {split} records have the "
            f"input of a train record, so their scores measure memorisation")


def task_info(spec: TaskSpec) -> TaskInfo:
    """The :class:`TaskInfo` of a user task (benchmark ``"custom"``, no label list)."""
    return TaskInfo(spec.name, "custom", spec.metric, None)


def _text(value: Any, records: Records, index: int, column: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        raise DataError(f"{records.where(index)}: field {column!r} is empty (null)")
    if isinstance(value, (bool, int, float)):
        return str(value)
    kind = {list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
    raise DataError(f"{records.where(index)}: field {column!r} must be text, got {kind}")


def to_examples(records: Records, spec: TaskSpec) -> list[Example]:
    """The records of one source as examples (see the module docstring for the rules)."""
    columns = spec.columns()
    required = [c for c in (spec.input_column, spec.output, spec.id) if c is not None]
    examples: list[Example] = []
    first_of: dict[str, int] = {}
    for index, row in enumerate(records.rows):
        rid = row.get(spec.id) if spec.id is not None else None
        rid = rid if isinstance(rid, str) and rid.strip() else None
        values = {}
        for column in columns:
            if column not in row:
                raise DataError(f"{records.where(index, rid)}: missing field {column!r}")
            values[column] = _text(row[column], records, index, column)
        for column in required:
            if not values[column].strip():
                raise DataError(f"{records.where(index, rid)}: field {column!r} is empty")
        text = values[spec.input_column] if spec.template is None else \
            render_template(spec.template, values)
        ex_id = values[spec.id] if spec.id is not None else f"{spec.name}_{index}"
        if ex_id in first_of:
            raise DataError(f"{records.where(index, rid)}: field {spec.id!r}: id {ex_id!r} is "
                            f"also record {first_of[ex_id]}'s")
        first_of[ex_id] = index
        examples.append(Example(ex_id, text, values[spec.output]))
    return examples


def _derived(source: Source) -> Source:
    """The train source looked at for another role's split (its own split dropped)."""
    return source.model_copy(update={"split": None}) if isinstance(source, SourceSpec) else source


def role_source(spec: TaskSpec, role: str) -> tuple[Optional[Source], bool]:
    """The source of ``role`` and whether it is derived (looked for in the train source)."""
    given = getattr(spec, role)
    if given is not None or role == "train":
        return given, False
    return _derived(spec.train), True


def load_role(spec: TaskSpec, role: str) -> Optional[list[Example]]:
    """The examples of one role of a user task, in file order; None when the role has no
    source (no ``dev``/``test`` key, and the train source has no such split)."""
    source, derived = role_source(spec, role)
    records = read_source(source, role, spec.columns(), derived=derived)
    return None if records is None else to_examples(records, spec)


def load_custom_task(spec: TaskSpec, n_train: Optional[int], n_test: Optional[int],
                     seed: int | str, split: str = "test",
                     notes: Optional[list[str]] = None) -> TaskData:
    """Load a user task and draw its training and evaluation samples (:func:`draw_task`).

    ``split="test"`` needs test records (``test``, or a test split of the train source);
    ``split="dev"`` uses the task's dev records when it has some (``dev``, or a
    validation/dev split of the train source), else holds records out of the train file.
    Test records with the input of a train record (:func:`overlap_note`) are logged as a
    warning, or appended to ``notes`` when it is given.
    Raises DataError for unreadable records and ConfigError when the split has no source.
    """
    info = task_info(spec)
    train = load_role(spec, "train")
    assert train is not None
    test = load_role(spec, "test")
    dev = load_role(spec, "dev") if split == "dev" else None
    if split == "test" and test is None:
        raise ConfigError(f"data.tasks: task {spec.name}: no test records: give test: FILE, "
                          f"or evaluate on records held out from the train file with "
                          f"eval.split: dev")
    note = overlap_note(spec.name, train, test) if split == "test" and test is not None else None
    if note and notes is not None:
        notes.append(note)
    elif note:
        log.warning(note)
    return draw_task(info, train, n_train, n_test, seed, split, test_pool=test, dev_pool=dev)
