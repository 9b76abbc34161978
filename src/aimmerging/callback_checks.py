"""The mistakes of a task loop around :class:`~aimmerging.callback.AIMMergingCallback`:
refused when a ``train()`` begins (sharded parameters, the callback registered twice, a
resume from a checkpoint that does not fit), and, those that still train, warned about when a
task starts (no ``start_task``, no ``finish_task``, a folder of another task's checkpoints)
and when it ends (no merge, or only merges that kept the trained weights)."""

from __future__ import annotations

import warnings
import weakref
from pathlib import Path
from typing import Optional

from .callback_state import checkpoint_task
from .errors import ConfigError

__all__ = ["check_trainer", "check_resume", "warn_task_start", "warn_task_end"]


def check_trainer(callback, args, state, model) -> None:
    """ConfigError for a Trainer the callback cannot drive: DeepSpeed or FSDP (sharded
    parameters), or a ``train()`` with this callback, or another AIMMergingCallback, registered
    already (every step would merge twice); then marks ``model`` as driven by ``callback``."""
    if getattr(args, "deepspeed", None) or getattr(args, "fsdp", None):
        raise ConfigError("AIMMergingCallback: DeepSpeed and FSDP shard the parameters, which "
                          "the fusion needs whole on every rank; use DDP (torchrun)")
    owner = getattr(model, "_aimmerging_callback", None)
    owner = owner() if owner is not None else None
    if owner is not None and owner._state is state:
        raise ConfigError("AIMMergingCallback: " + (
            "this callback is registered twice with the Trainer (callbacks=[...] and "
            "add_callback?)" if owner is callback else "two AIMMergingCallbacks are registered "
            "with the Trainer (a notebook cell run twice?)") + "; every step would merge twice")
    model._aimmerging_callback = weakref.ref(callback)


def check_resume(pending: dict, step: int, finished: list, named: Optional[str],
                 current: Optional[str]) -> None:
    """Before anything of the checkpoint state ``pending`` (:func:`~aimmerging.callback_state.
    read_state`) is restored for a Trainer resuming at global ``step``: ConfigError when it is
    of another step, of a task in ``finished`` (the replay memory's) that no ``start_task``
    named, or of another task than ``named``; a warning when nothing named it and it is not the
    callback's ``current`` task."""
    saved = (pending["state"].get("task") or {}).get("name")
    folder = pending["folder"].parent
    at = pending["state"].get("step", step)
    if at != step:
        raise ConfigError(f"AIMMergingCallback: the callback's state in {folder} is of step {at}, "
                          f"and the Trainer resumes at step {step} (resume_from() and "
                          f"resume_from_checkpoint name two checkpoints); nothing was restored")
    if saved in finished and named is None:
        raise ConfigError(f"AIMMergingCallback: the checkpoint {folder} belongs to task {saved!r}, "
                          f"which this callback has finished (it is in the replay memory): "
                          f"resume only the task that stopped; nothing was restored")
    if named is not None and named != saved:
        raise ConfigError(f"AIMMergingCallback: start_task({named!r}), but the checkpoint "
                          f"{folder} belongs to task {saved!r}; nothing was restored: resume from "
                          f"that task's own checkpoint (give each task its own output_dir when "
                          f"saving checkpoints)")
    if named is None and saved != current:
        warnings.warn(f"AIMMergingCallback: resuming task {saved!r} from {folder}; no "
                      f"start_task() named the task, so the checkpoint was not checked against "
                      f"it", stacklevel=1)


def warn_task_start(callback, name: str, index: int, named: bool, args) -> None:
    """Warnings for the task ``name`` (0-based ``index``; ``named``: by ``start_task``) that
    ``callback`` is about to train under the Trainer's ``args``."""
    if index > 0 and not named:
        warnings.warn(f"AIMMergingCallback: trainer.train() began without start_task(), so it "
                      f"trains a new task {name!r} with the controller reset; call "
                      f"start_task(name) before each task (a stopped task continues with "
                      f"train(resume_from_checkpoint=...))", stacklevel=1)
    if index > 0 and not len(callback.memory):
        warnings.warn(f"AIMMergingCallback: the replay memory is empty, so task {name!r} "
                      f"trains without merging; call finish_task(examples) after each "
                      f"task's train()", stacklevel=1)
    other = checkpoint_task(Path(args.output_dir)) if args.save_strategy != "no" else None
    if other is not None and other != name:
        warnings.warn(f"AIMMergingCallback: {args.output_dir} holds checkpoints of task "
                      f"{other!r}; task {name!r} will save its own there, overwriting those "
                      f"of the same step, and a resume takes the newest of either: give each "
                      f"task its own output_dir", stacklevel=1)


def warn_task_end(callback, steps: int) -> None:
    """Warnings for the task that ``callback`` just trained for ``steps`` optimizer steps."""
    stage = callback.task["index"] + 1
    merges = [m for m in callback.traces.merges if m["stage"] == stage]
    if len(callback.memory) and not merges:
        warnings.warn(f"AIMMergingCallback: task {callback.task['name']!r} ended after "
                      f"{steps} steps without a merge (a merge comes after S "
                      f"steps, S = {callback.engine.controller.interval} now, and may wait until "
                      f"2S); train it longer or lower s_init", stacklevel=1)
    elif merges and all(float(m["alpha_past"]) == 0 for m in merges):
        warnings.warn(f"AIMMergingCallback: every merge of task {callback.task['name']!r} "
                      f"({len(merges)}) kept the trained weights (alpha_new 1, alpha_past 0): "
                      f"the forgetting signal did not fire, and a task's first merge without "
                      f"it is a no-op (docs/algorithm.md, fusion cases); the task trained as "
                      f"without merging", stacklevel=1)
