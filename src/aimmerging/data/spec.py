"""A task given by its files: the mapping form of a ``data.tasks`` entry (docs/data.md).

::

    data:
      tasks:
        - dbpedia                                   # a benchmark task of data.dir
        - {name: support, train: data/support/train.jsonl, test: data/support/test.jsonl,
           input: question, output: answer, metric: accuracy}

A source (``train``, ``dev``, ``test``) is a path or a mapping. A path is a JSON Lines file
(``.jsonl``/``.ndjson``), a JSON file (a list of records), a CSV or TSV file with a header
row, a Hugging Face ``datasets`` folder made by ``save_to_disk`` (a DatasetDict: the split
named like the role; or a single Dataset), or a folder of ``<role>.<ext>`` files
(``train.jsonl``, ``test.csv`` ...). ``hf:NAME`` is a dataset of the Hugging Face hub (the
split named like the role). The mapping form ``{path: P, split: S}`` or ``{hub: NAME,
subset: C, split: S}`` picks a split. Relative paths count from the folder the command runs
in, as ``data.dir`` does.
"""

from __future__ import annotations

import re
import string
from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from aimmerging.scoring import normalize_metric

__all__ = ["HUB_PREFIX", "Source", "SourceSpec", "TaskSpec", "render_template", "task_spec",
           "template_fields"]

#: a source string starting with this names a dataset of the Hugging Face hub
HUB_PREFIX = "hf:"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True,
                              use_attribute_docstrings=True)


class SourceSpec(_Strict):
    """One source of records with an explicit split: a local path or a hub dataset."""

    path: Optional[str] = None
    """A file or folder (relative: to the current folder)."""
    hub: Optional[str] = None
    """A Hugging Face hub dataset name."""
    subset: Optional[str] = None
    """The hub dataset's configuration name."""
    split: Optional[str] = None
    """The split of a DatasetDict, a split folder or the hub dataset."""

    @model_validator(mode="after")
    def _one_place(self) -> "SourceSpec":
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of path and hub")
        if self.subset is not None and self.hub is None:
            raise ValueError("subset is for a hub dataset (hub: NAME)")
        for key in ("path", "hub", "subset", "split"):
            value = getattr(self, key)
            if value is not None and not value.strip():
                raise ValueError(f"{key} is empty")
        return self


Source = Union[str, SourceSpec]


def template_fields(template: str) -> list[str]:
    """The column names of ``template``'s placeholders, in order, each once.

    ``{column}`` is replaced by the record's value, ``{{`` and ``}}`` are literal braces.
    Raises ``ValueError`` for a malformed template, a positional ``{}`` or ``{0}``, attribute
    or index access (``{a.b}``, ``{a[0]}``), a conversion (``{a!r}``) or a format spec
    (``{a:>9}``): a template only pastes column values in.
    """
    fields: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template: {exc} (write {{{{ and }}}} for literal braces)") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.strip() or name.isdigit():
            raise ValueError("template: a placeholder must name a column, as in {question}")
        if any(c in name for c in ".[]") or conversion or spec:
            raise ValueError(f"template: {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} is not a plain column placeholder "
                             f"(write {{column}})")
        if name not in fields:
            fields.append(name)
    return fields


def render_template(template: str, values: dict[str, str]) -> str:
    """``template`` with each ``{column}`` replaced by ``values[column]`` (no other formatting)."""
    out = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            out.append(values[name])
    return "".join(out)


class TaskSpec(_Strict):
    """A task given by its files (a mapping in ``data.tasks``); unknown keys are refused.

    ``input`` names the column of the model's input text (default ``input``) and ``output``
    that of the answer (default ``output``); ``template`` (optional) builds the input from
    columns instead (``"Summarize: {document}\\nSummary:"``). ``metric`` is ``accuracy``
    (the default: exact match; the test and dev samples are stratified by answer) or
    ``rouge_l`` (aliases of :func:`aimmerging.scoring.normalize_metric`).
    ``test`` may be left out when ``train`` is a DatasetDict or split folder with a test
    split, or when the run evaluates on dev (``eval.split: dev``); ``dev`` is optional (without
    it, dev records are held out from the train file: docs/data.md). ``id`` names a column of
    record ids (default ``<name>_<index>``).
    """

    name: str
    """The task's name (letters, digits and _ . + -): it names its files in the run folder."""
    train: Source
    """The training records: a path (JSONL, JSON list, CSV/TSV, a `datasets` folder, a folder
    of split files), `hf:NAME` for the hub, or a mapping picking a split."""
    dev: Optional[Source] = None
    """The dev records (null: held out from `train`)."""
    test: Optional[Source] = None
    """The test records (null: the test split of `train` where it has one)."""
    input: Optional[str] = None
    """The column of the model's input text (null: `input`, unless a template is given)."""
    output: str = "output"
    """The column of the answer."""
    template: Optional[str] = None
    """Builds the input from columns instead, e.g. `"Summarize: {document}\nSummary:"`."""
    metric: str = "accuracy"
    """`accuracy` (exact match; test and dev stratified by answer) or `rouge_l`."""
    id: Optional[str] = None
    """A column of record ids (null: `<name>_<index>`)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"name {value!r}: use letters, digits and _ . + - (it names the "
                             f"task's files in the run folder)")
        return value

    @field_validator("train", "dev", "test", mode="before")
    @classmethod
    def _source(cls, value):
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty path")
        if isinstance(value, str) and value.startswith(HUB_PREFIX) and not value[len(HUB_PREFIX):].strip():
            raise ValueError(f"{HUB_PREFIX} needs a dataset name, as in hf:user/dataset")
        return value

    @field_validator("input", "output", "id")
    @classmethod
    def _column(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.strip():
            raise ValueError("empty column name")
        return value

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return normalize_metric(value)

    @field_validator("template")
    @classmethod
    def _template(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            try:
                template_fields(value)
            except ValueError as exc:
                raise ValueError(str(exc).removeprefix("template: ")) from None
            if not value.strip():
                raise ValueError("template is empty")
        return value

    @property
    def input_column(self) -> Optional[str]:
        """The column of the input text: ``input``, else ``"input"`` when there is no template."""
        return self.input if self.input is not None or self.template is not None else "input"

    def columns(self) -> list[str]:
        """Every column a record must have: the input (or the template's), output and id."""
        cols = [self.input_column] if self.input_column is not None else []
        if self.template is not None:
            cols += [c for c in template_fields(self.template) if c not in cols]
        cols += [c for c in (self.output, self.id) if c is not None and c not in cols]
        return cols


def task_spec(value: dict, position: int) -> TaskSpec:
    """Validate one mapping of ``data.tasks`` (``position`` from 0). Raises ``ValueError`` with
    one line naming the entry and the key: ``data.tasks[2] (support): metric: unknown ...``."""
    from pydantic import ValidationError

    name = value.get("name") if isinstance(value.get("name"), str) else None
    where = f"data.tasks[{position}]" + (f" ({name})" if name else "")
    try:
        return TaskSpec.model_validate(value)
    except ValidationError as err:
        errors = err.errors()
        first = errors[0]
        if first["loc"] and isinstance(value.get(str(first["loc"][0])), dict):      # a source mapping: its own error
            first = next((e for e in errors if any("SourceSpec" in str(p) for p in e["loc"])), first)
        loc = [str(p) for p in first["loc"] if str(p) != "str" and "SourceSpec" not in str(p)]
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            known = ", ".join(TaskSpec.model_fields) if len(loc) <= 1 else ", ".join(
                SourceSpec.model_fields)
            msg = f"unknown key (known: {known})"
        elif first["type"] == "missing":
            msg = "missing key"
        elif first["type"] in ("string_type", "model_type") and len(loc) == 1 and \
                loc[0] in ("train", "dev", "test"):
            msg = "expected a path, hf:NAME or a mapping {path: ..., split: ...}"
        raise ValueError(f"{where}: {'.'.join(loc) + ': ' if loc else ''}{msg}") from None

