"""Reading benchmark data in either of its two layouts, with one-line errors.

AimMerging layout (auto-detected)::

    DIR/{train,dev,test}/<task>_T5.json    (or <task>.json): JSON list of {id, input, output}

``DIR`` may also be a folder of such folders (``data/`` holding ``data_longsequence/``
and ``data_superni/``): their tasks are merged.

O-LoRA CL_Benchmark layout::

    DIR/<category>/<task>/{train,dev,test}.json   JSON list of {"sentence", "label"}
    DIR/<category>/<task>/labels.json             JSON list of label strings

(task folders directly under ``DIR`` work too; records may also be
``{"input", "output"}`` raw pairs and the file an ``{"Instances": [...]}`` object).
O-LoRA records are turned into exactly the record the AimMerging files hold for
the same example; see :mod:`aimmerging.data.olora`.

Every problem raises :class:`aimmerging.errors.DataError` with a one-line message
that starts with the file (or folder) and names the record index and field where
there is one. Empty strings are accepted as values (some SuperNI outputs are empty);
missing fields, wrong types and empty files or lists are not.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aimmerging.data import olora
from aimmerging.data.registry import canonical_task_name
from aimmerging.errors import ConfigError, DataError, missing_folder

__all__ = [
    "Example",
    "SPLITS",
    "canonical_split",
    "canonical_task_name",
    "detect_layout",
    "list_tasks",
    "load_split",
    "load_file",
]

SPLITS = ("train", "dev", "test")
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "dev": "dev", "validation": "dev", "valid": "dev", "val": "dev", "eval": "dev",
    "test": "test", "testing": "test",
}
_MAX_OLORA_DEPTH = 3


@dataclass(frozen=True)
class Example:
    """One record as the model sees it: ``input`` holds the prompt, ``output`` the answer."""

    id: str
    input: str
    output: str


def canonical_split(split: str) -> str:
    """``train``, ``dev`` or ``test`` (``validation``/``val`` -> ``dev``); ConfigError otherwise."""
    key = split.strip().lower() if isinstance(split, str) else None
    if key not in _SPLIT_ALIASES:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return _SPLIT_ALIASES[key]


# --------------------------------------------------------------------------- scanning


@dataclass
class _TaskFiles:
    splits: dict[str, Path] = field(default_factory=dict)
    folder: Path | None = None  # O-LoRA task folder
    category: str | None = None  # O-LoRA category folder name


@dataclass
class _Scan:
    layout: str
    tasks: dict[str, _TaskFiles]


def _check_dir(data_dir: str | os.PathLike[str]) -> Path:
    path = Path(data_dir)
    if not path.exists():
        raise DataError(f"{missing_folder(path)}: data folder not found")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder")
    return path


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as exc:
        raise DataError(f"{path}: cannot list folder ({exc.strerror or exc})") from None


def _json_files(path: Path) -> list[Path]:
    try:
        return sorted(
            p for p in path.iterdir()
            if p.suffix.lower() == ".json" and p.is_file() and not p.name.startswith(".")
        )
    except OSError as exc:
        raise DataError(f"{path}: cannot list folder ({exc.strerror or exc})") from None


def _is_aim_root(path: Path) -> bool:
    return any((path / s).is_dir() and _json_files(path / s) for s in SPLITS)


def _is_olora_task_dir(path: Path) -> bool:
    return any((path / f"{s}.json").is_file() for s in SPLITS)


def _scan_aimmerging(roots: list[Path]) -> dict[str, _TaskFiles]:
    tasks: dict[str, _TaskFiles] = {}
    for root in roots:
        for split in SPLITS:
            split_dir = root / split
            if not split_dir.is_dir():
                continue
            for file in _json_files(split_dir):
                name = canonical_task_name(file.stem)
                entry = tasks.setdefault(name, _TaskFiles())
                if split in entry.splits:
                    raise DataError(
                        f"{file}: task {name!r} already has a {split} file "
                        f"({entry.splits[split]}); keep one of them"
                    )
                entry.splits[split] = file
    return tasks


def _find_olora_task_dirs(path: Path, depth: int, found: list[Path]) -> None:
    for sub in _subdirs(path):
        if _is_olora_task_dir(sub):
            found.append(sub)
        elif depth > 1:
            _find_olora_task_dirs(sub, depth - 1, found)


def _scan_olora(data_dir: Path) -> dict[str, _TaskFiles]:
    found: list[Path] = []
    if _is_olora_task_dir(data_dir):
        found.append(data_dir)
    else:
        _find_olora_task_dirs(data_dir, _MAX_OLORA_DEPTH, found)
    tasks: dict[str, _TaskFiles] = {}
    for folder in found:
        name = canonical_task_name(folder.name)
        if name in tasks:
            raise DataError(
                f"{folder}: task {name!r} is also in {tasks[name].folder}; keep one of them"
            )
        category = folder.parent.name if folder != data_dir else None
        entry = _TaskFiles(folder=folder, category=category)
        for split in SPLITS:
            file = folder / f"{split}.json"
            if file.is_file():
                entry.splits[split] = file
        tasks[name] = entry
    return tasks


def _scan(data_dir: str | os.PathLike[str]) -> _Scan:
    root = _check_dir(data_dir)
    if _is_aim_root(root):
        return _Scan("aimmerging", _scan_aimmerging([root]))
    nested = [sub for sub in _subdirs(root) if _is_aim_root(sub)]
    if nested:
        return _Scan("aimmerging", _scan_aimmerging(nested))
    olora_tasks = _scan_olora(root)
    if olora_tasks:
        return _Scan("olora", olora_tasks)
    raise DataError(
        f"{root}: no benchmark data found; expected train/, dev/, test/ folders of "
        "<task>_T5.json files (AimMerging) or <category>/<task>/{train,dev,test}.json "
        "with labels.json (O-LoRA CL_Benchmark)"
    )


def detect_layout(data_dir: str | os.PathLike[str]) -> str:
    """``"aimmerging"`` or ``"olora"``; DataError when the folder holds neither."""
    return _scan(data_dir).layout


def list_tasks(data_dir: str | os.PathLike[str]) -> dict[str, dict[str, Path]]:
    """Canonical task name -> split -> file, sorted by task name (splits in train, dev, test order)."""
    scan = _scan(data_dir)
    return {name: dict(scan.tasks[name].splits) for name in sorted(scan.tasks)}


# --------------------------------------------------------------------------- reading


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            hint = (" (one JSON object per line? JSON Lines is not read: the file must hold one "
                    "JSON list of records, or the benchmark's {\"Instances\": [...]} object)")
        raise DataError(
            f"{path}: invalid or truncated JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}{hint}"
        ) from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None


def _type_name(value: Any) -> str:
    return "null" if value is None else {dict: "object", list: "list"}.get(type(value), type(value).__name__)


def _record_list(path: Path, data: Any) -> list[Any]:
    if isinstance(data, dict) and isinstance(data.get("Instances"), list):
        data = data["Instances"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {_type_name(data)}")
    if not data:
        raise DataError(f"{path}: no records (empty list)")
    return data


def _string_field(path: Path, index: int, record: dict[str, Any], names: tuple[str, ...]) -> str:
    """The first of ``names`` present in ``record``; it must be a string."""
    for name in names:
        if name in record:
            value = record[name]
            if not isinstance(value, str):
                raise DataError(
                    f"{path}: record {index}: field {name!r} must be a string, got {_type_name(value)}"
                )
            return value
    raise DataError(f"{path}: record {index}: missing field {names[0]!r}")


def _record(path: Path, index: int, record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise DataError(f"{path}: record {index}: expected an object, got {_type_name(record)}")
    return record


def load_file(path: str | os.PathLike[str], task: str | None = None) -> list[Example]:
    """Read one AimMerging-format file (a JSON list of ``{id, input, output}``).

    Extra keys (SuperNI's ``data_id``) are ignored. A record without ``id`` gets
    ``f"{task}_{index}"`` (``task`` defaults to the file stem without ``_T5``).
    """
    path = Path(path)
    records = _record_list(path, _read_json(path))
    prefix = task or canonical_task_name(path.stem)
    examples = []
    for index, raw in enumerate(records):
        record = _record(path, index, raw)
        text = _string_field(path, index, record, ("input",))
        answer = _string_field(path, index, record, ("output",))
        rid = _string_field(path, index, record, ("id",)) if "id" in record else f"{prefix}_{index}"
        examples.append(Example(rid, text, answer))
    return examples


def _read_labels(folder: Path) -> list[str]:
    path = folder / "labels.json"
    if not path.is_file():
        raise DataError(f"{path}: labels file not found (needed to build the option list)")
    labels = _read_json(path)
    if not isinstance(labels, list) or not labels:
        raise DataError(f"{path}: expected a non-empty JSON list of label strings")
    for index, label in enumerate(labels):
        if not isinstance(label, str):
            raise DataError(f"{path}: label {index} must be a string, got {_type_name(label)}")
    return labels


def _load_olora_file(path: Path, task: str, entry: _TaskFiles) -> list[Example]:
    assert entry.folder is not None
    records = _record_list(path, _read_json(path))
    labels = _read_labels(entry.folder)
    try:
        olora.instruction_line(task, labels, entry.category)
    except KeyError:
        raise DataError(
            f"{entry.folder}: no instruction template for task {task!r} in category "
            f"{entry.category!r}; known categories: {', '.join(olora.CATEGORY_INSTRUCTIONS)}"
        ) from None
    examples = []
    for index, raw in enumerate(records):
        record = _record(path, index, raw)
        sentence = _string_field(path, index, record, ("sentence", "input"))
        label = _string_field(path, index, record, ("label", "output"))
        text = olora.build_input(task, sentence, labels, entry.category)
        examples.append(Example(olora.record_id(task, index, entry.folder.name), text, label))
    return examples


def load_split(data_dir: str | os.PathLike[str], task: str, split: str) -> list[Example]:
    """The examples of one split of one task, in file order.

    ``task`` is matched by any spelling :func:`canonical_task_name` accepts;
    ``split`` is ``train``, ``dev`` or ``test`` (``validation`` -> ``dev``).
    """
    split = canonical_split(split)
    scan = _scan(data_dir)
    name = canonical_task_name(task)
    entry = scan.tasks.get(name)
    if entry is None:
        known = ", ".join(sorted(scan.tasks)) or "none"
        raise DataError(f"{Path(data_dir)}: no task {task!r} (looked for {name!r}); found: {known}")
    path = entry.splits.get(split)
    if path is None:
        have = ", ".join(entry.splits) or "none"
        if entry.folder is not None:
            expected = entry.folder / f"{split}.json"
        else:
            sample = next(iter(entry.splits.values()))
            expected = sample.parent.parent / split / sample.name
        raise DataError(f"{expected}: missing {split} split of task {name!r} (have: {have})")
    if scan.layout == "olora":
        return _load_olora_file(path, name, entry)
    return load_file(path, task=name)
