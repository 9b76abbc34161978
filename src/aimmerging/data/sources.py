"""Reading the records of a user's task source: JSON Lines, JSON, CSV/TSV, ``datasets``.

A source (:mod:`aimmerging.data.spec`) resolves, for one role (``train``, ``dev``, ``test``),
to a table of records: :class:`Records`, a list of ``{column: value}`` rows with where each
came from, so that every error names the file, the record and the field. Problems raise
:class:`~aimmerging.errors.DataError` in one line; relative paths count from the current
folder (:func:`~aimmerging.errors.missing_folder` says which). The Hugging Face ``datasets``
package is imported only for a ``datasets`` folder or a hub name (``pip install
"aimmerging[datasets]"``).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from aimmerging.data.spec import HUB_PREFIX, Source, SourceSpec
from aimmerging.errors import DataError, missing_folder

__all__ = ["Records", "ROLE_SPLITS", "FILE_TYPES", "read_source", "source_label"]

#: the split names a role looks for in a DatasetDict, a folder of split files or the hub
ROLE_SPLITS = {"train": ("train",), "dev": ("validation", "dev", "valid", "val"),
               "test": ("test",)}
#: file suffix -> reader name
FILE_TYPES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
              ".tsv": "tsv"}
_INSTALL = 'pip install "aimmerging[datasets]" (or pip install datasets==5.2.0)'


@dataclass
class Records:
    """The rows of one source: ``rows[i]`` maps column -> value; ``lines[i]`` is the line of
    the file it starts on (JSON Lines, CSV, TSV) or None."""

    origin: str                        # the file, "FOLDER (split S)" or "hf:NAME (split S)"
    rows: list[dict[str, Any]]
    lines: list[Optional[int]] = field(default_factory=list)

    def where(self, index: int, rid: Optional[str] = None) -> str:
        """``ORIGIN: record INDEX (line L, id 'X')`` for a message about record ``index``."""
        extra = []
        if self.lines and self.lines[index] is not None:
            extra.append(f"line {self.lines[index]}")
        if rid:
            extra.append(f"id {rid!r}")
        return f"{self.origin}: record {index}" + (f" ({', '.join(extra)})" if extra else "")


def source_label(source: Source) -> str:
    """A source as a user wrote it, for messages."""
    if isinstance(source, str):
        return source
    place = source.path if source.path is not None else f"{HUB_PREFIX}{source.hub}"
    return place + (f" (split {source.split})" if source.split else "")


def _shown(path: Path) -> str:
    return missing_folder(path)


# --------------------------------------------------------------------------- files


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from None


def _object(path: Path, index: int, value: Any, line: Optional[int] = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = "null" if value is None else {list: "list"}.get(type(value), type(value).__name__)
        where = f"record {index}" + (f" (line {line})" if line is not None else "")
        raise DataError(f"{path}: {where}: expected an object of columns, got {kind}")
    return value


def _jsonl(path: Path, text: str) -> Records:
    rows, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number}: invalid JSON at column {exc.colno}: "
                            f"{exc.msg}") from None
        except RecursionError:
            raise DataError(f"{path}: line {number}: JSON nested too deeply") from None
        rows.append(_object(path, len(rows), value, number))
        lines.append(number)
    return Records(str(path), rows, lines)


def _json(path: Path, text: str) -> Records:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return _jsonl(path, text)                # JSON Lines in a .json file
        raise DataError(f"{path}: invalid or truncated JSON at line {exc.lineno}, column "
                        f"{exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None
    if isinstance(data, dict):
        lists = [k for k in ("Instances", "data", "records") if isinstance(data.get(k), list)]
        if not lists:
            raise DataError(f"{path}: expected a JSON list of records (or an object with one "
                            f"under \"data\"), got an object with keys "
                            f"{', '.join(map(repr, list(data)[:5]))}")
        data = data[lists[0]]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return Records(str(path), [_object(path, i, v) for i, v in enumerate(data)],
                   [None] * len(data))


def _table(path: Path, text: str, delimiter: str) -> Records:
    csv.field_size_limit(2 ** 31 - 1)                 # long documents in one cell
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
    try:
        header = reader.fieldnames
        if not header:
            raise DataError(f"{path}: no header row (the first line must name the columns)")
        blank = [i for i, name in enumerate(header) if not (name or "").strip()]
        if blank:
            raise DataError(f"{path}: line 1: column {blank[0] + 1} of the header has no name")
        rows, lines = [], []
        start = reader.line_num + 1
        for row in reader:
            extra = row.pop(None, None)
            if extra is not None:
                raise DataError(f"{path}: record {len(rows)} (line {start}): {len(header) + len(extra)} "
                                f"cells, but the header names {len(header)} columns")
            rows.append(row)
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: not valid "
                        f"{'TSV' if delimiter == chr(9) else 'CSV'} ({exc})") from None
    return Records(str(path), rows, lines)


def _read_file(path: Path) -> Records:
    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type {path.suffix or '(no suffix)'!r}; expected "
                        f"{', '.join(FILE_TYPES)} or a datasets folder")
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    if kind == "jsonl":
        records = _jsonl(path, text)
    elif kind == "json":
        records = _json(path, text)
    else:
        records = _table(path, text, "," if kind == "csv" else "\t")
    if not records.rows:
        raise DataError(f"{path}: no records")
    return records


# --------------------------------------------------------------------------- datasets


def _datasets():
    try:
        import datasets
    except ImportError:
        return None
    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    return datasets


def _dataset_records(ds, origin: str, columns: Sequence[str]) -> Records:
    """The needed ``columns`` of a ``datasets.Dataset`` as rows (a missing one: DataError)."""
    have = list(ds.column_names)
    missing = [c for c in columns if c not in have]
    if missing:
        raise DataError(f"{origin}: no column {missing[0]!r} (columns: {', '.join(have)})")
    if len(ds) == 0:
        raise DataError(f"{origin}: no records")
    values = [list(ds[c]) for c in columns]
    rows = [dict(zip(columns, row)) for row in zip(*values)]
    return Records(origin, rows, [None] * len(rows))


def _is_dataset_folder(path: Path) -> Optional[str]:
    """``"dict"`` for a DatasetDict saved by ``save_to_disk``, ``"dataset"`` for a Dataset."""
    if (path / "dataset_dict.json").is_file():
        return "dict"
    if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
        return "dataset"
    return None


def _from_disk(path: Path, kind: str, role: str, split: Optional[str], columns: Sequence[str],
               derived: bool) -> Optional[Records]:
    datasets = _datasets()
    if datasets is None:
        raise DataError(f"{path}: a Hugging Face datasets folder, but the datasets package is "
                        f"not installed: {_INSTALL}")
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:                       # noqa: BLE001 - a broken folder, any error
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path}: cannot load the datasets folder ({first})") from None
    if kind == "dataset":
        if split is not None:
            raise DataError(f"{path}: a single Dataset has no splits (split: {split} asked for)")
        if derived:
            return None                            # a Dataset is one role's records only
        return _dataset_records(loaded, str(path), columns)
    names = list(loaded.keys())
    wanted = (split,) if split is not None else ROLE_SPLITS[role]
    found = next((s for s in wanted if s in names), None)
    if found is None:
        if derived:
            return None
        raise DataError(f"{path}: no {' or '.join(wanted)} split (splits: {', '.join(names)})")
    return _dataset_records(loaded[found], f"{path} (split {found})", columns)


def _from_hub(name: str, subset: Optional[str], role: str, split: Optional[str],
              columns: Sequence[str], derived: bool) -> Optional[Records]:
    """A dataset of the Hugging Face hub (downloaded by ``datasets`` into its cache)."""
    datasets = _datasets()
    label = f"{HUB_PREFIX}{name}" + (f" ({subset})" if subset else "")
    if datasets is None:
        raise DataError(f"{label}: a Hugging Face hub dataset, but the datasets package is not "
                        f"installed: {_INSTALL}")
    wanted = (split,) if split is not None else ROLE_SPLITS[role]
    for i, one in enumerate(wanted):
        try:
            ds = datasets.load_dataset(name, subset, split=one)
        except ValueError as exc:                   # an unknown split name
            if "split" in str(exc).lower() and (derived or i < len(wanted) - 1):
                continue
            raise DataError(f"{label}: {(str(exc).strip().splitlines() or ['?'])[0]}") from None
        except Exception as exc:                   # noqa: BLE001 - network, auth, missing name
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"{label}: cannot load it from the hub ({first})") from None
        return _dataset_records(ds, f"{label} (split {one})", columns)
    return None


# --------------------------------------------------------------------------- folders


def _split_file(folder: Path, role: str, split: Optional[str], derived: bool) -> Optional[Path]:
    wanted = (split,) if split is not None else ROLE_SPLITS[role]
    for name in wanted:
        found = [folder / f"{name}{suffix}" for suffix in FILE_TYPES
                 if (folder / f"{name}{suffix}").is_file()]
        if len(found) > 1:
            raise DataError(f"{folder}: {found[0].name} and {found[1].name} both hold the "
                            f"{name} split; keep one of them")
        if found:
            return found[0]
    if derived:
        return None
    raise DataError(f"{_shown(folder)}: no {'/'.join(wanted)} file "
                    f"({', '.join(f'{wanted[0]}{s}' for s in FILE_TYPES)}) and not a datasets "
                    f"folder (save_to_disk)")


def read_source(source: Source, role: str, columns: Sequence[str],
                derived: bool = False) -> Optional[Records]:
    """The records of ``source`` for ``role`` (``train``, ``dev`` or ``test``).

    A folder or a hub name gives the split named like the role (:data:`ROLE_SPLITS`) unless
    the source names its split. ``derived``: the source was given for another role (a test
    split looked for in the train source): None when it has no such split, instead of an
    error. ``columns`` are the columns a datasets source must have (only those are read).
    Raises DataError naming the file or folder.
    """
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        return _from_hub(source[len(HUB_PREFIX):].strip(), None, role, None, columns, derived)
    if isinstance(source, SourceSpec) and source.hub is not None:
        return _from_hub(source.hub, source.subset, role, source.split, columns, derived)
    text, split = (source, None) if isinstance(source, str) else (source.path, source.split)
    path = Path(os.path.expanduser(text))
    if path.is_file():
        if derived:
            return None                              # a file holds one role's records
        if split is not None:
            raise DataError(f"{path}: split {split!r} is for a folder; a file holds one split")
        return _read_file(path)
    if not path.exists():
        raise DataError(f"{_shown(path)}: file not found")
    if not path.is_dir():
        raise DataError(f"{path}: not a file or folder")
    kind = _is_dataset_folder(path)
    if kind is not None:
        return _from_disk(path, kind, role, split, columns, derived)
    file = _split_file(path, role, split, derived)
    return None if file is None else _read_file(file)
