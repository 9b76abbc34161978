"""Run configuration: YAML -> validated, typed settings (pydantic), with dotted overrides.

The sections are the models of :mod:`aimmerging.config_models` (re-exported here). Errors are
raised as :class:`~aimmerging.errors.ConfigError` with one line naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml
from pydantic import ValidationError

from .config_models import (METHOD_NAMES, SINGLE_MERGE_COMBINATIONS, DataConfig, EvalConfig,
                            MethodConfig, ModelConfig, RunConfig, TrainConfig)
from .errors import ConfigError, did_you_mean

__all__ = ["METHOD_NAMES", "SINGLE_MERGE_COMBINATIONS", "DataConfig", "EvalConfig", "MethodConfig",
           "ModelConfig", "RunConfig", "TrainConfig", "apply_overrides", "build_config",
           "dump_config", "flat_config", "load_config", "load_raw", "parse_override",
           "split_config_argument", "upgrade_saved"]


def _known_keys(section: Sequence) -> list[str]:
    """The keys of the config section at ``section`` (a path of keys from the top)."""
    model: Any = RunConfig
    for part in section:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None or not isinstance(field.annotation, type):
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _format_error(err: ValidationError, source: str, overrides: Sequence[str] = ()) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key" + did_you_mean(str(first["loc"][-1]), _known_keys(first["loc"][:-1]))
    where = f"{source}: " if source else ""
    for item in reversed(list(overrides)):        # the last --set of a key is the one in force
        key, _, value = item.partition("=")
        key = key.strip()
        if loc and (loc == key or loc.startswith(key + ".") or key.startswith(loc + ".")):
            where = f"--set {item}: "
            if first["type"] == "list_type" and not value.strip().startswith("["):
                msg += (f" (a list goes in brackets, the item quoted for the shell: "
                        f"--set \"{key}=[{value.strip()}]\")")
            break
    if loc and msg.startswith((loc + ".", loc + "[")):
        loc = ""
    others = [".".join(str(p) for p in e["loc"]) or "(the config)" for e in err.errors()[1:]]
    more = f" (and {len(others)} more: {', '.join(others)})" if others else ""
    return f"{where}{loc + ': ' if loc else ''}{msg}{more}"


def split_config_argument(config: Optional[str], overrides: Sequence[str]) -> tuple[str, list[str]]:
    """The config file and the ``--set`` items of a command line where ``--set KEY=VALUE ...``
    (several values a flag) may have taken the config file that followed it: the one item
    without ``=``. Raises ConfigError when there is no config file, or more than one."""
    overrides = list(overrides)
    if config is not None:
        return config, overrides
    bare = [o for o in overrides if "=" not in o]
    if len(bare) != 1:
        raise ConfigError("give the YAML config file (e.g. configs/smoke.yaml)" if not bare else
                          f"--set: {', '.join(map(repr, bare))} are not KEY=VALUE items")
    if not bare[0].endswith((".yaml", ".yml")) and not Path(bare[0]).is_file():
        raise ConfigError(f"--set {bare[0]!r}: expected KEY=VALUE (and give the YAML config file)")
    return bare[0], [o for o in overrides if o != bare[0]]


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value``; the value is parsed as YAML (numbers, lists, booleans, null)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``--set`` overrides to a raw config dict (returns a new dict)."""
    import copy

    out = copy.deepcopy(raw)
    for item in overrides or []:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def load_raw(path: Union[str, Path]) -> dict:
    """Read a YAML config file into a dict. Raises ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections at the top level")
    return raw


def build_config(raw: dict, source: str = "", overrides: Sequence[str] = ()) -> RunConfig:
    """Validate a raw dict into a :class:`RunConfig`. Raises ConfigError (one line) naming
    ``source`` (the config file), or the ``--set`` item of ``overrides`` that set the bad key."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source, overrides)) from None


def load_config(path: Union[str, Path, None], overrides: Optional[list[str]] = None,
                data: Optional[str] = None) -> RunConfig:
    """Load a YAML config (or the defaults when ``path`` is None), take ``data.dir`` from
    ``data`` (``--data DIR``) or ``$AIMMERGING_DATA``
    (:func:`~aimmerging.data.location.locate_data`) and apply the ``--set`` overrides."""
    from .data.location import locate_data

    raw = load_raw(path) if path is not None else {}
    raw = locate_data(raw, overrides or [], data)
    raw = apply_overrides(raw, overrides or [])
    if path is not None:
        raw = _task_files_beside(raw, Path(path).parent)
    return build_config(raw, str(path or ""), overrides or [])


def _task_files_beside(raw: dict, folder: Path) -> dict:
    """``raw`` with each relative file of a task given by its files (``train``, ``dev``,
    ``test``) that is missing from the current folder but present beside the config file
    (in ``folder``) replaced by that one's path: relative paths count from the current folder
    first, then from the config file's folder (docs/data.md)."""
    import os

    data = raw.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        return raw

    def beside(value):
        if isinstance(value, dict) and isinstance(value.get("path"), str):
            return {**value, "path": beside(value["path"])}
        if (not isinstance(value, str) or value.startswith("hf:") or os.path.isabs(value)
                or os.path.exists(value) or not (folder / value).exists()):
            return value
        return str(folder / value)

    tasks = [{**t, **{r: beside(t[r]) for r in ("train", "dev", "test") if r in t}}
             if isinstance(t, dict) else t for t in data["tasks"]]
    return {**raw, "data": {**data, "tasks": tasks}}


#: keys of earlier versions that are gone, as runs' saved configs hold them: a saved value
#: here is today's default behaviour and the key is dropped (every run before eval.split
#: saved ``data.test_split: test``, which is ``eval.split: test``); another saved value
#: stays, so that the config is refused and compares unequal
RETIRED_KEYS = {("data", "test_split"): "test"}


def upgrade_saved(raw: Any) -> Any:
    """A run's saved config (``config.yaml`` as a dict) in today's keys (:data:`RETIRED_KEYS`)."""
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for (section, key), same in RETIRED_KEYS.items():
        block = out.get(section)
        if isinstance(block, dict) and key in block and block[key] == same:
            out[section] = {k: v for k, v in block.items() if k != key}
    return out


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML text (written to ``config.yaml`` in the run folder)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def flat_config(cfg: RunConfig) -> dict[str, Union[int, float, str, bool]]:
    """The config as ``{"section.key": value}`` with scalar values, as trackers' hparams need.

    Lists become their YAML-like text (``[q_proj, v_proj]``) and None becomes ``"none"``.
    """
    out: dict[str, Union[int, float, str, bool]] = {}
    for section, values in cfg.model_dump(mode="json").items():
        items = values.items() if isinstance(values, dict) else [(None, values)]
        for key, value in items:
            name = section if key is None else f"{section}.{key}"
            if value is None:
                value = "none"
            elif isinstance(value, list):
                value = "[" + ", ".join(map(str, value)) + "]"
            elif isinstance(value, dict):
                value = str(value)
            out[name] = value
    return out
