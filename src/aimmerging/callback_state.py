"""The :class:`~aimmerging.callback.AIMMergingCallback`'s state in a Trainer checkpoint.

``checkpoint-N/aimmerging/`` holds:

- ``state.json``: the method, the task (index and name), the
  controller's state (:meth:`~aimmerging.engine.MergingEngine.state_dict`), the replay memory,
  the traces, timings and counters, and the rehearsal AdamW's plain values (its parameter
  groups); non-finite floats as in :mod:`aimmerging.checkpoint`;
- ``tensors.safetensors``: the anchor and importance tensors (``engine.*``) and the rehearsal
  AdamW's moments and step counts (``rehearsal_optimizer.<index>.<name>``).

Nothing is pickled. The folder is written into a temporary folder that then replaces it, so a
reader never sees half of it.

Between two tasks, :meth:`~aimmerging.callback.AIMMergingCallback.save` writes the finished
tasks alone (the replay memory, the traces, the task count) to one JSON file
(:func:`write_progress`), which a new process loads to go on with the next task.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .checkpoint import decode_floats, encode_floats
from .errors import ConfigError, TrainingError, one_line
from .io import atomic_write_json, temporary_folder

STATE_FOLDER = "aimmerging"
_VERSION = 1
_OPT = "rehearsal_optimizer."
_ENGINE = "engine."


def _optimizer_parts(sd: dict) -> tuple[dict, dict]:
    """An optimizer ``state_dict`` split into tensors (for safetensors) and plain values (JSON)."""
    tensors, plain = {}, {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPT}{index}.{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": plain}


def _optimizer_state(meta: dict, tensors: dict) -> dict:
    """The inverse of :func:`_optimizer_parts`."""
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith(_OPT):
            index, name = key[len(_OPT):].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for index, entry in meta["state"].items():
        state.setdefault(int(index), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}


def write_state(callback, checkpoint: Path, step: int) -> Path:
    """Write the callback's state at the Trainer's global ``step`` into
    ``checkpoint/aimmerging`` (atomically); returns that folder."""
    engine = callback.engine
    opt_tensors, opt_plain = _optimizer_parts(engine.rehearsal_optimizer.state_dict())
    state = {"version": _VERSION, "method": callback.method_name, "step": int(step),
             "task": dict(callback.task),
             "engine": engine.state_dict(), "traces": callback.traces.state_dict(),
             "memory": callback.memory.state_dict(),
             "timing": dict(callback.timing), "counters": dict(callback.counters),
             "rehearsal_optimizer": opt_plain}
    tensors = {**{_ENGINE + k: v for k, v in engine.tensor_state().items()}, **opt_tensors}
    checkpoint = Path(checkpoint)
    checkpoint.mkdir(parents=True, exist_ok=True)
    final = checkpoint / STATE_FOLDER
    tmp = temporary_folder(checkpoint, f".{STATE_FOLDER}.")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                  str(tmp / "tensors.safetensors"))
        atomic_write_json(tmp / "state.json", encode_floats(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def read_state(checkpoint: Path) -> dict:
    """Read ``checkpoint/aimmerging``; TrainingError naming the folder when absent or unreadable."""
    folder = Path(checkpoint) / STATE_FOLDER
    if Path(checkpoint).is_file():
        raise TrainingError(f"{checkpoint}: a file, not a Trainer checkpoint folder "
                            f"(checkpoint-N); a file that AIMMergingCallback.save() wrote goes "
                            f"to load()")
    if not (folder / "state.json").is_file():
        earlier = _checkpoints_with_state(Path(checkpoint).parent)
        hint = (f"; the newest checkpoint of {Path(checkpoint).parent} with the callback's "
                f"state is {earlier[-1].name}: resume from it (train(resume_from_checkpoint=...)) "
                f"or delete {Path(checkpoint).name}" if earlier else
                "; for a checkpoint elsewhere call callback.resume_from(FOLDER) before train()")
        raise TrainingError(f"{folder}: no AIMMergingCallback state (the checkpoint was saved "
                            f"without the callback, or the process stopped while it was being "
                            f"saved: the Trainer writes its part first){hint}")
    try:
        state = decode_floats(json.loads((folder / "state.json").read_text(encoding="utf-8")))
        tensors = load_file(str(folder / "tensors.safetensors"))
    except Exception as exc:   # JSON, OS and safetensors' own errors
        msg = one_line(exc)
        raise TrainingError(f"{folder}: unreadable AIMMergingCallback state ({msg})") from None
    if state.get("version") != _VERSION:
        raise TrainingError(f"{folder}: unsupported state version {state.get('version')!r}")
    return {"folder": folder, "state": state, "tensors": tensors}


def _checkpoints_with_state(folder: Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``folder`` that hold the callback's state, by N."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("checkpoint-*") if p.name[len("checkpoint-"):].isdigit()
             and (p / STATE_FOLDER / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len("checkpoint-"):]))


def restore_memory(callback, data: dict) -> None:
    """Put the replay memory of what :func:`read_state` returned back into ``callback`` (text
    or tokenized, as saved); before the engine is built, since the memory decides the batching."""
    from .memory import memory_from_state

    saved = data["state"].get("memory")
    try:
        if isinstance(saved, dict) and set(saved) == {"rows"}:      # a given memory, kept whole
            if saved["rows"] != len(callback.memory):
                raise ValueError(f"the memory held {saved['rows']} rows, this one "
                                 f"{len(callback.memory)}")
            return
        if isinstance(saved, dict) and saved.get("kind", "text") == callback.memory.kind:
            callback.memory.load_state_dict(saved)          # in place: the user's object
        else:
            callback.memory = memory_from_state(saved)
    except (KeyError, ValueError, TypeError) as exc:
        msg = one_line(exc)
        raise TrainingError(f"{data['folder']}: the checkpoint does not fit this callback "
                            f"({msg})") from None


def restore(callback, data: dict, device) -> None:
    """Put what :func:`read_state` returned back into ``callback`` (its engine already built;
    the memory by :func:`restore_memory` before)."""
    state, tensors, folder = data["state"], data["tensors"], data["folder"]
    engine = callback.engine
    try:
        if state["method"] != callback.method_name:
            raise ValueError(f"saved with method {state['method']}, not {callback.method_name}")
        engine.load_state_dict(state["engine"], {k[len(_ENGINE):]: v for k, v in tensors.items()
                                                 if k.startswith(_ENGINE)}, device)
        engine.rehearsal_optimizer.load_state_dict(
            _optimizer_state(state["rehearsal_optimizer"], tensors))
        callback.traces.load_state_dict(state["traces"])
        for name in ("timing", "counters"):
            getattr(callback, name).clear()
            getattr(callback, name).update(state[name])
        callback.task = {"index": int(state["task"]["index"]), "name": state["task"]["name"]}
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        msg = one_line(exc)
        raise TrainingError(f"{folder}: the checkpoint does not fit this callback ({msg})") from None
    engine.task = (callback.task["index"], callback.task["name"])


def checkpoint_task(folder: Path):
    """The task whose callback state the newest ``checkpoint-N`` of ``folder`` holds (the
    checkpoint that ``train(resume_from_checkpoint=True)`` takes); None when there is none."""
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(folder)) if Path(folder).is_dir() else None
    state = Path(last or "") / STATE_FOLDER / "state.json"
    if last is None or not state.is_file():
        return None
    try:
        return json.loads(state.read_text(encoding="utf-8")).get("task", {}).get("name")
    except (OSError, ValueError, AttributeError):
        return None


#: what :func:`write_progress` writes: the finished tasks, between two tasks
PROGRESS_KIND = "AIMMergingCallback tasks"


def write_progress(callback, path: Path) -> Path:
    """Write the finished tasks' state of ``callback`` (the replay memory, the traces, the task
    count, timings and counters) to the JSON file ``path``, atomically; returns ``path``."""
    state = {"version": _VERSION, "kind": PROGRESS_KIND, "method": callback.method_name,
             "settings": callback.saved_settings(), "task": dict(callback.task),
             "memory": callback.memory.state_dict(), "traces": callback.traces.state_dict(),
             "timing": dict(callback.timing), "counters": dict(callback.counters)}
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()                  # the file it names is the one written
    if path.exists() and not path.is_file():
        raise ConfigError(f"AIMMergingCallback.save: {path} is not a plain file (a folder or a "
                          f"device); give a file path such as {path / 'tasks.json'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, encode_floats(state))
    return path


def read_progress(callback, path: Path) -> None:
    """Put the state that :func:`write_progress` wrote to ``path`` into ``callback``.

    Raises:
        TrainingError: ``path`` is absent, unreadable, of another kind or version, or saved
            with another method (naming the file).
    """
    path = Path(path)
    try:
        state = decode_floats(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        msg = one_line(exc)
        raise TrainingError(f"{path}: not a readable AIMMergingCallback state ({msg})") from None
    if isinstance(state, dict) and "engine" in state and "kind" not in state:
        raise TrainingError(f"{path}: the callback's state in a Trainer checkpoint; resume it "
                            f"with train(resume_from_checkpoint=...) (and resume_from() for a "
                            f"checkpoint outside args.output_dir)")
    if not isinstance(state, dict) or state.get("kind") != PROGRESS_KIND:
        raise TrainingError(f"{path}: not a file that AIMMergingCallback.save() wrote")
    if state.get("version") != _VERSION:
        raise TrainingError(f"{path}: unsupported state version {state.get('version')!r}")
    if state.get("method") != callback.method_name:
        raise TrainingError(f"{path}: saved with method {state.get('method')!r}, not "
                            f"{callback.method_name!r}")
    mine = callback.saved_settings()
    theirs = state.get("settings")
    if isinstance(theirs, dict) and theirs != mine:
        keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise TrainingError(f"{path}: saved by a callback with other settings: "
                            + ", ".join(f"{k}={theirs.get(k)!r} there, {mine.get(k)!r} here"
                                        for k in keys))
    from .memory import memory_from_state
    from .traces import Traces

    try:                    # everything read first, so that a bad file changes nothing
        memory = memory_from_state(state["memory"])
        traces = Traces()
        traces.load_state_dict(state["traces"])
        timing, counters = dict(state["timing"]), dict(state["counters"])
        task = {"index": int(state["task"]["index"]), "name": state["task"]["name"]}
    except Exception as exc:   # any malformed part of a JSON file: KeyError, TypeError, ...
        msg = one_line(exc)
        raise TrainingError(f"{path}: the state does not fit this callback ({msg})") from None
    callback.memory, callback.traces, callback.task = memory, traces, task
    for name, values in (("timing", timing), ("counters", counters)):
        getattr(callback, name).clear()
        getattr(callback, name).update(values)
