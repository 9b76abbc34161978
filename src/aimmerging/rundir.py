"""The run folder: what a run writes there, and the checks before a run writes to it.

``aimmerging run`` refuses to write over a run unless ``--resume`` (the config must be the
run's own and its checkpoint complete) or ``--overwrite`` (the folder must hold only what a
run writes, which is then deleted; the folder itself stays).
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import yaml

from .config import RunConfig
from .errors import ConfigError, shown_names


#: what only a run that got past its first checkpoint or its end holds
RUN_FILES = ("checkpoint", ".checkpoint.old", "metrics.json")
#: config keys that may change when a run is resumed: they change what is logged or
#: reported (FWT from the a0 scores), not the training; prefix sharing changes the history
#: loss by float rounding only (a controller decision could flip only at a near-exact tie)
RESUME_MAY_CHANGE = {("train", "report_to"), ("train", "checkpoint_every"),
                     ("method", "log_history_loss"), ("method", "history_share_prefix"),
                     ("single_task_scores",)}


#: keys added since runs were first saved whose default changes what such a run did: a
#: saved config without the key ran as this value (the history loss in float32 before
#: ``method.history_precision``, on a new memory batch every step before
#: ``method.history_draw``), so resuming it under the new default is refused
EARLIER_BEHAVIOUR = {("method", "history_precision"): "model", ("method", "history_draw"): "step"}


#: what a run writes in its folder (``aimmerging plot`` adds ``figures``; an Accelerate
#: tracker such as tensorboard logs under the project name, ``aimmerging``), besides the
#: checkpoint's ``.checkpoint.*`` folders and atomic writes' ``.NAME.*.tmp`` files
RUN_ENTRIES = frozenset({"config.yaml", "checkpoint", "metrics.json", "run.log", "adapters",
                         "predictions", "accuracy_matrix.csv", "accuracy_matrix.json",
                         "merge_trace.csv", "signals.csv", "example_scores.csv", "figures",
                         "aimmerging"})


def foreign_entries(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` that no run writes (:data:`RUN_ENTRIES`), sorted: what
    ``--overwrite`` must not delete."""
    def ours(name: str) -> bool:
        return name in RUN_ENTRIES or name.startswith(".checkpoint.") or (
            name.endswith(".tmp") and any(name.startswith(f".{e}.") for e in RUN_ENTRIES))

    return sorted(p.name for p in run_dir.iterdir() if not ours(p.name))


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds (part of) a run: a checkpoint or ``metrics.json``, or
    the ``config.yaml`` and ``run.log`` a run writes first (a user's own config.yaml is not one)."""
    if not run_dir.is_dir():
        return False
    return any((run_dir / f).exists() for f in RUN_FILES) or (
        (run_dir / "config.yaml").is_file() and (run_dir / "run.log").is_file())


def check_run_dir(run_dir: Path, cfg: RunConfig, resume: bool, overwrite: bool,
                  world: int = 1) -> None:
    """Refuse to write over an existing run unless ``resume`` or ``overwrite``; reads only.

    With ``resume``, the config must be the run's (``config.yaml``), and its checkpoint
    complete and made by ``world`` processes. ``overwrite`` refuses a folder that holds what
    no run writes (:func:`foreign_entries`).
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--output: {run_dir} exists and is not a folder")
    has_run = holds_run(run_dir)
    if has_run and not (resume or overwrite):
        raise ConfigError(f"{run_dir} already holds a run: pass --resume to continue it "
                          f"or --overwrite to start again")
    if overwrite and has_run and not resume:
        foreign = foreign_entries(run_dir)
        if foreign:
            raise ConfigError(f"--output: {run_dir} holds a run and also what no run writes "
                              f"({shown_names(foreign)}); nothing was deleted: move them away or "
                              f"choose another --output")
    if not has_run and run_dir.is_dir():
        taken = sorted(p.name for p in run_dir.iterdir() if p.name in RUN_ENTRIES)
        if taken:
            raise ConfigError(f"--output: {run_dir} holds no run but has {shown_names(taken)}, "
                              f"which a run would write over; nothing was changed: choose another "
                              f"--output")
    if not (resume and has_run):
        return
    from . import checkpoint as ckpt

    saved = run_dir / "config.yaml"
    if not saved.is_file() and ckpt.find_checkpoint(run_dir) is not None:
        raise ConfigError(f"--resume: {run_dir} has a checkpoint but no config.yaml, so its "
                          f"settings cannot be checked; nothing was changed: put the run's "
                          f"config.yaml back, or --overwrite starts the run again")
    if saved.is_file():
        old = saved_config(run_dir)
        diffs = config_differences(old, cfg)
        if len(diffs) > 3:               # another config altogether: name the keys, not all values
            keys = ", ".join(k for k, _, _ in diffs[:6]) + (", ..." if len(diffs) > 6 else "")
            raise ConfigError(f"--resume: {len(diffs)} settings differ from the run's own "
                              f"{saved} ({keys}): this folder holds a run of another config; "
                              f"resume it with that file as the config (aimmerging run {saved} "
                              f"--output {run_dir} --resume), or use --overwrite")
        if diffs:
            parts = []
            for key, then, now in diffs:
                section, _, name = key.partition(".")
                block = old.get(section) if isinstance(old, dict) else None
                if (section, name) in EARLIER_BEHAVIOUR and isinstance(block, dict) and name not in block:
                    parts.append(f"{saved} was written before {key} existed, and the run ran as "
                                 f"{key}={set_value(then)}")
                else:
                    parts.append(f"{key} is {set_value(now)} here but {set_value(then)} in {saved}")
            raise ConfigError(f"--resume: {'; '.join(parts)}; resume with --set "
                              f"{set_items(diffs)} "
                              f"(the run's own settings), or use --overwrite")
    found = ckpt.find_checkpoint(run_dir)
    damaged = ckpt.incomplete_checkpoint(run_dir)
    if found is None and damaged is not None:
        raise ConfigError(f"--resume: {damaged[0]} lacks {damaged[1]} and no earlier checkpoint is "
                          f"complete; nothing was changed: --overwrite starts the run again")
    if found is not None:
        missing = [f"{n}.pt" for n in ckpt.OPTIMIZERS if not (found / f"{n}.pt").is_file()]
        if missing:
            raise ConfigError(f"--resume: {found} lacks {missing[0]}; nothing was changed: "
                              f"--overwrite starts the run again")
        state = ckpt.read_state(found)
        if not isinstance(state, dict) or not isinstance(state.get("position"), dict):
            raise ConfigError(f"--resume: {found}/state.json is not a checkpoint state")
        if str(state.get("world", 1)) != str(world):
            raise ConfigError(f"--resume: {found}: the run was started with {state.get('world', 1)} "
                              f"process(es), not {world}; resume it with as many")


def saved_config(run_dir: Path):
    """The content of a run folder's ``config.yaml`` (any YAML value), or None when there is
    none. Raises ConfigError when it is not valid YAML."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(f"{path} is not valid YAML; the folder holds no usable run") from None


def set_value(value) -> str:
    """``value`` as YAML in one line, as a ``--set`` item parses it: ``null``, ``[a, b]``, ``2``."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip()
    return text[:-3].strip() if text.endswith("...") else text


def set_item(key: str, value) -> str:
    """``key=value`` as one ``--set`` item, quoted for a POSIX shell where it needs to be
    (a list's brackets and spaces, a path with spaces)."""
    return shlex.quote(f"{key}={set_value(value)}")


def set_items(diffs: list) -> str:
    """The ``--set`` items that give back the saved values of :func:`config_differences`."""
    return " ".join(set_item(key, then) for key, then, _ in diffs)


def config_differences(old, cfg: RunConfig) -> list:
    """Every (dotted key, saved value, value now) where a saved config differs from ``cfg``.

    The saved config (a dict read from a run's ``config.yaml``) is validated first, so
    that keys added to the config since the run was made count at their defaults, which
    keep the earlier behaviour, or at their ``EARLIER_BEHAVIOUR`` value where the default
    does not. Keys in ``RESUME_MAY_CHANGE`` are ignored; empty when equal.
    """
    return _differences(_same_paths(as_it_ran(old)), _same_paths(cfg.model_dump(mode="json")))


def as_it_ran(old) -> dict:
    """A saved config (a dict read from a run's ``config.yaml``) with every key, at the value
    the run ran with: keys it lacks at their ``EARLIER_BEHAVIOUR`` value, else their default
    (the raw dict where it does not validate); older keys upgraded (``upgrade_saved``)."""
    from .config import build_config, upgrade_saved

    saved = upgrade_saved(old) if isinstance(old, dict) else {}
    for (section, key), value in EARLIER_BEHAVIOUR.items():
        if isinstance(saved.get(section), dict) and key not in saved[section]:
            saved = {**saved, section: {**saved[section], key: value}}
    try:
        return build_config(saved).model_dump(mode="json")
    except ConfigError:          # build_config's only error: compare the raw dict instead
        return saved


def _same_path(path):
    """A local path absolute, normalised and with its links resolved (against the current folder);
    other values as they are."""
    if isinstance(path, str) and not path.startswith("hf:"):
        return os.path.realpath(os.path.expanduser(path))
    if isinstance(path, dict) and isinstance(path.get("path"), str):
        return {**path, "path": _same_path(path["path"])}
    return path


def _same_paths(config: dict) -> dict:
    """``config`` with ``data.dir`` and the files of the tasks given by their files absolute and
    normalised (against the current folder, links resolved), so that ``data/x/``, ``./data/x``,
    its absolute path and a link to it compare equal."""
    data = config.get("data")
    if not isinstance(data, dict):
        return config
    data = {**data, "dir": _same_path(data.get("dir"))}
    if isinstance(data.get("tasks"), list):
        data["tasks"] = [{**t, **{r: _same_path(t.get(r)) for r in ("train", "dev", "test")}}
                         if isinstance(t, dict) else t for t in data["tasks"]]
    return {**config, "data": data}


def _differences(old: dict, new: dict, prefix: tuple = ()) -> list:
    """Every (dotted key, old value, new value) where two config dicts differ, in key order."""
    out = []
    for key in list(new) + [k for k in old if k not in new]:
        path = prefix + (key,)
        if path in RESUME_MAY_CHANGE:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, path))
        elif a != b:
            out.append((".".join(map(str, path)), a, b))
    return out


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Create the run folder; ``overwrite`` (without ``resume``) first removes an existing run.

    Call :func:`check_run_dir` first (this function only acts).
    """
    if overwrite and holds_run(run_dir) and not resume:
        for entry in run_dir.iterdir():     # what a run wrote (checked): the folder itself stays
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
