"""The mistakes of a task loop around :class:`~aimmerging.callback.AIMMergingCallback` that
still train, warned about when a task starts (no ``start_task``, no ``finish_task``, a folder
of another task's checkpoints) and when it ends (no merge, or only merges that kept the
trained weights)."""

from __future__ import annotations

import warnings
from pathlib import Path

from .callback_state import checkpoint_task

__all__ = ["warn_task_start", "warn_task_end"]


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
