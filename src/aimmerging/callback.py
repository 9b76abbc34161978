"""AIMMerging in a Hugging Face ``Trainer``: :class:`AIMMergingCallback`.

The callback is the Trainer's front door of :class:`aimmerging.engine.MergingEngine`, the
engine that ``aimmerging run`` drives: after every optimizer step it measures the history
loss (one memory batch, no gradient, dropout off), drives the merge controller and, at a
merge, runs the rehearsal with its own AdamW and fuses the trainable parameters in place,
so that the Trainer's next step starts from the fused weights (docs/algorithm.md). The Trainer's own
optimizer and learning-rate schedule are left as they are, except under
``aimmerging_reference``, whose rehearsal runs with the main optimizer as the authors' code
does (here: the Trainer's).

A task is one ``trainer.train()`` (a new Trainer per task, or the same one with a new
dataset); :meth:`AIMMergingCallback.start_task` names it and
:meth:`AIMMergingCallback.finish_task` adds a sample of its examples to the replay memory::

    callback = AIMMergingCallback(method="aimmerging")
    for name, examples in tasks:
        callback.start_task(name)
        Trainer(model, args, train_dataset=examples, data_collator=..., callbacks=[callback]).train()
        callback.finish_task(examples)

``merge_trace.csv`` and ``signals.csv`` (the columns of a run folder, :mod:`aimmerging.traces`)
are written to ``args.output_dir``; the callback's state (controller, anchor, rehearsal
AdamW, replay memory, traces) goes into every Trainer checkpoint, as ``aimmerging/`` in the
``checkpoint-N`` folder, and comes back with ``trainer.train(resume_from_checkpoint=...)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Union

import torch
from transformers import TrainerCallback

from .callback_host import TrainerHost
from .callback_inputs import (GIVEN, as_examples, as_memory, check_arguments, check_container,
                              check_memory_batch, is_rows, text_records, trainer_collate)
from .callback_checks import check_resume, check_trainer, warn_task_end, warn_task_start
from .config import build_config
from .controller import ControllerConfig
from .engine import MemoryPasses, MergingEngine
from .errors import ConfigError, TrainingError, did_you_mean
from .losses import _unwrap
from .memory import TokenizedMemory
from .methods import MERGING_METHODS
from .methods.merging import controller_config, merging_settings
from .traces import Traces

__all__ = ["AIMMergingCallback"]

class AIMMergingCallback(TrainerCallback):
    """AIMMerging (Feng et al., EMNLP 2025) in any ``transformers.Trainer`` (or ``trl.SFTTrainer``).

    Args:
        memory: the replay memory of earlier tasks: a :class:`~aimmerging.memory.ReplayMemory`,
            a list of examples (``{"input": ..., "output": ...}`` mappings or
            :class:`~aimmerging.data.formats.Example`), kept whole, or tokenized rows (mappings
            with ``input_ids`` and ``labels``, or a ``datasets.Dataset`` of them). None: an
            empty ReplayMemory that :meth:`finish_task` fills (the first task then trains plainly).
        method: a merging method name (``aimmerging``, ``aimmerging_no_ls``, ``aimmerging_no_fs``,
            ``aimmerging_mgm``, ``aimmerging_ifm``, ``aimmerging_reference``, ``fixed_interval``,
            ``recurrent_kif``) or a :class:`~aimmerging.controller.ControllerConfig`.
        tokenizer: tokenizes text examples (default: the Trainer's ``processing_class``).
        collate: a function from a list of memory items to a batch (``input_ids``,
            ``attention_mask``, ``labels`` tensors). Default for text examples: an
            :class:`~aimmerging.batching.Encoder` (prompt, a space, the answer, EOS; loss on the
            answer, as ``aimmerging run`` trains); for tokenized rows: the Trainer's data
            collator, given the columns of the dataset the Trainer trains on (the Trainer drops
            the others under ``remove_unused_columns``).
        batch_size: examples per rehearsal batch (default: ``args.per_device_train_batch_size``).
        seed: seeds the memory batches (default: ``args.seed``) and the sample that
            :meth:`finish_task` keeps (default 42).
        max_input_tokens, max_target_tokens: the Encoder's limits for text examples.
        output_dir: where ``merge_trace.csv`` and ``signals.csv`` go (default: ``args.output_dir``).
        **settings: keys of a run config's ``method:`` section (``s_init``, ``memory_ratio``,
            ``history_batch_size``, ``skip_idle_rehearsal``, ``importance_fusion`` ...; see
            ``configs/``).

    Raises:
        ConfigError: an unknown method or setting, or a value out of range (one line naming it).

    Attributes:
        engine: the :class:`~aimmerging.engine.MergingEngine` of the current ``train()``;
            after a merge, ``engine.anchor`` holds the fused weights (a snapshot).
        last_merge: the merge record (a ``merge_trace.csv`` row as a dict) of the step that
            just ended, None when it did not merge.
        traces: the :class:`~aimmerging.traces.Traces` of every task so far.
        task: ``{"index": ..., "name": ...}`` of the task being (or last) trained.
        memory: the replay memory.
    """

    def __init__(self, memory=None, method: Union[str, ControllerConfig] = "aimmerging", *,
                 tokenizer=None, collate=None, batch_size: Optional[int] = None,
                 seed: Optional[int] = None, max_input_tokens: int = 512,
                 max_target_tokens: int = 64, output_dir: Optional[str] = None,
                 **settings: Any) -> None:
        if "name" in settings:
            raise ConfigError("AIMMergingCallback: give the method as method=, not name=")
        for key in ("learning_rate", "lr"):
            if key in settings:
                raise ConfigError(f"AIMMergingCallback: no {key}=: the rehearsal runs at the "
                                  f"learning rate of the Trainer's step that merged")
        check_arguments(tokenizer, collate, output_dir, (max_input_tokens, max_target_tokens))
        self.method = method
        self.method_name = "aimmerging" if isinstance(method, ControllerConfig) else method
        if self.method_name not in MERGING_METHODS:
            raise ConfigError(f"AIMMergingCallback: method {method!r} is not a merging "
                              f"method{did_you_mean(method, MERGING_METHODS)}; known: "
                              f"{', '.join(MERGING_METHODS)} (the other methods, replay "
                              f"among them, run with `aimmerging run`)")
        self.settings, self.seed, self.batch_size = dict(settings), seed, batch_size
        self.tokenizer, self.collate, self.output_dir = tokenizer, collate, output_dir
        self.max_tokens = (max_input_tokens, max_target_tokens)
        cfg = self._config()          # every setting checked now, before any training
        self.memory = as_memory(memory, cfg)
        self.traces = Traces()
        self.timing: dict = defaultdict(float)
        self.counters: dict = defaultdict(int)
        self.engine: Optional[MergingEngine] = None
        self.task: dict = {"index": -1, "name": None}    # the task the last train() trained
        self._next_name: Optional[str] = None
        self._pending: Optional[dict] = None      # a checkpoint to restore at on_train_begin
        self._lr: Optional[float] = None
        self._rows_collate = None       # the last train()'s data collator (memory rows' batches)
        self._state = None              # the TrainerState of the train() under way
        self._was_seq2seq = False       # the last train()'s model: an encoder-decoder
        self.last_merge: Optional[dict] = None

    # --- set-up ------------------------------------------------------------------------
    def _config(self, args=None):
        """The run config the engine reads: seed, method section, train batch and clipping."""
        train: dict = {}
        if args is not None:
            norm = args.max_grad_norm
            train = {"batch_size": self.batch_size or args.per_device_train_batch_size,
                     "max_grad_norm": float(norm) if norm and norm > 0 else None}
        elif self.batch_size is not None:
            train = {"batch_size": self.batch_size}
        seed = self.seed if self.seed is not None else (args.seed if args is not None else 42)
        raw = {"seed": seed, "method": {"name": self.method_name, **self.settings}, "train": train}
        return build_config(raw, "AIMMergingCallback")

    def _controller(self, cfg) -> tuple[ControllerConfig, bool]:
        if isinstance(self.method, ControllerConfig):
            return self.method, cfg.method.importance_fusion
        overrides, ifm = merging_settings(self.method_name, cfg.method)
        return (controller_config(cfg.method, overrides),
                cfg.method.importance_fusion if ifm is None else ifm)

    def _collate(self, model, processing_class):
        """The memory's collator: ``collate=`` (text examples reach it as ``{"id", "input",
        "output"}`` mappings); for tokenized rows, the Trainer's; for text, an Encoder (None
        while the memory is empty: no memory batch to make)."""
        text = not isinstance(self.memory, TokenizedMemory)
        if self.collate is not None:
            return text_records(self.collate) if text else self.collate
        if not text:
            if self._rows_collate is None:
                raise ConfigError("AIMMergingCallback: give collate= for a tokenized memory")
            return self._rows_collate
        from .batching import Encoder

        if not len(self.memory):                 # nothing to batch in this task
            return None
        tokenizer = self.tokenizer or processing_class
        if tokenizer is None:
            raise ConfigError("AIMMergingCallback: give tokenizer= (the Trainer has no "
                              "processing_class) or collate=")
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)     # a processor's tokenizer
        return Encoder(tokenizer, self._seq2seq(model), *self.max_tokens).train_batch

    @staticmethod
    def _seq2seq(model) -> bool:
        return bool(getattr(getattr(_unwrap(model), "config", None), "is_encoder_decoder", False))

    # --- tasks ---------------------------------------------------------------------------
    def start_task(self, name: str) -> None:
        """Name the task that the next ``trainer.train()`` trains (default ``task1``, ``task2`` ...).

        Raises:
            ConfigError: an empty name, or one already in the replay memory (a finished task).
        """
        if not isinstance(name, str) or not name.strip() or name == GIVEN:
            raise ConfigError(f"AIMMergingCallback.start_task: name must be a non-empty string, "
                              f"got {name!r}")
        if name in self.memory.tasks:
            raise ConfigError(f"AIMMergingCallback.start_task: task {name!r} is finished already "
                              f"(it is in the replay memory); give each task its own name")
        if self._next_name is not None and self._next_name != name:
            import warnings

            warnings.warn(f"AIMMergingCallback.start_task: task {self._next_name!r} was started "
                          f"and not trained; the next train() trains {name!r} instead",
                          stacklevel=2)
        self._next_name = name

    def finish_task(self, examples, name: Optional[str] = None) -> list:
        """Add a finished task's training examples to the replay memory: a seeded sample of
        ``memory_ratio`` (or ``memory_size``) of them (docs/algorithm.md "Replay memory"),
        stored under ``name`` (default: the task just trained). Returns the stored examples.

        ``examples`` are text (mappings with ``input`` and ``output``, or aimmerging
        Examples), or tokenized rows (a ``datasets.Dataset``, or mappings with ``input_ids``,
        usually with ``attention_mask`` and ``labels``), the same form from task to task.
        Tokenized rows are batched by the Trainer's data collator (or ``collate=``).

        Raises:
            ConfigError: no task trained yet and no ``name`` (or one started with
                :meth:`start_task` and not trained), a task already stored, not a collection, no
                examples (or a container of columns or splits, not of examples), text where the
                memory holds tokenized rows (or the reverse), an example without the fields
                above (naming its index and field), a row whose labels are all -100, or a first
                example that the collator of the memory batches cannot batch, or batches
                without a labelled token. Nothing is stored then.
        """
        where = "AIMMergingCallback.finish_task"
        if name is None and self._next_name is not None:
            raise ConfigError(f"{where}: task {self._next_name!r} was started but not trained "
                              f"yet; call trainer.train() first (or give name=)")
        name = name or self.task["name"]
        if not name:
            raise ConfigError(f"{where}: no task trained yet; give name=")
        check_container(examples, "examples")
        items = list(examples)
        if not items:
            raise ConfigError(f"{where}: task {name!r} has no examples to store")
        rows = is_rows(items)
        if rows and not isinstance(self.memory, TokenizedMemory):
            if len(self.memory):
                raise ConfigError(f"{where}: the replay memory holds text examples; give this "
                                  f"task's examples as text too ('input' and 'output'), or "
                                  f"tokenized rows from the first task on")
        elif not rows and isinstance(self.memory, TokenizedMemory) and len(self.memory):
            raise ConfigError(f"{where}: the replay memory holds tokenized rows; give this "
                              f"task's tokenized rows (with 'input_ids') too")
        items = items if rows else as_examples(items, "examples")
        collate = (self.collate or self._rows_collate) if rows else \
            (text_records(self.collate) if self.collate is not None else None)
        if collate is not None:     # the memory batches of the next task, tried now
            check_memory_batch(collate, dict(items[0]) if rows else items[0],
                               f"{where}: examples[0]", shifted=not self._was_seq2seq)
        if rows and not isinstance(self.memory, TokenizedMemory):
            self.memory = self.memory.emptied(TokenizedMemory)
        try:
            return self.memory.add_task(name, items)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def resume_from(self, folder) -> None:
        """Restore the state saved in the Trainer checkpoint ``folder`` when the next
        ``train(resume_from_checkpoint=folder)`` resumes it (needed only when that checkpoint
        is not ``args.output_dir/checkpoint-N``). A ``train()`` that does not resume refuses
        it: to start a new task after finished ones, see :meth:`save` and :meth:`load`."""
        from .callback_state import read_state

        self._pending = read_state(Path(folder))

    def save(self, path) -> Path:
        """Write the finished tasks (the replay memory, the traces, the task count) to the
        JSON file ``path``, atomically, so that a new process can :meth:`load` them and go on
        with the next task. Call it between tasks, after :meth:`finish_task` (inside a task,
        the Trainer's checkpoints hold the state). Returns the path written (a symlink's
        target).

        Raises:
            ConfigError: ``path`` is a folder or another non-file.
        """
        from .callback_state import write_progress

        return write_progress(self, Path(path))

    def load(self, path) -> None:
        """Load what :meth:`save` wrote into this callback, made with the same method and
        settings (without ``memory=``) and unused so far; the next ``train()`` is the task
        after the saved ones, or the saved task that had not finished, when ``start_task``
        names it again.

        Raises:
            ConfigError: this callback has trained or stored a task already.
            TrainingError: ``path`` is absent, unreadable or malformed (nothing is loaded
                then), or saved with another method or other settings (naming them).
        """
        from .callback_state import read_progress

        if self.task["index"] >= 0 or self.memory.tasks:
            given = " (memory= was given: a callback that loads starts without it)" \
                if GIVEN in self.memory.tasks else ""
            raise ConfigError(f"AIMMergingCallback.load: this callback holds tasks already"
                              f"{given}; load into a new one")
        read_progress(self, Path(path))

    def saved_settings(self) -> dict:
        """The settings that :meth:`save` records and :meth:`load` compares: the seed and the
        resolved ``method:`` section (memory ratio and size, controller settings ...)."""
        cfg = self._config()
        return {"seed": cfg.seed, "method": cfg.method.model_dump(mode="json")}

    # --- Trainer events --------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, processing_class=None,
                       train_dataloader=None, **kwargs):
        check_trainer(self, args, state, model)
        cfg = self._config(args)
        resuming = state.global_step > 0     # resume_from_checkpoint: the callback's state too
        if self._pending is not None and not resuming:
            folder, self._pending = self._pending["folder"].parent, None
            raise ConfigError(f"AIMMergingCallback: resume_from({str(folder)!r}), but this "
                              f"train() starts at step 0; give train(resume_from_checkpoint=...) "
                              f"too (to start a new task after finished ones: save() and load())")
        if resuming:
            from .callback_state import read_state, restore, restore_memory

            if self._pending is None:
                self._pending = read_state(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            try:
                check_resume(self._pending, state.global_step, self.memory.tasks,
                             self._next_name, self.task["name"])
            except ConfigError:
                self._pending = None
                raise
            restore_memory(self, self._pending)      # first: the memory decides the batching
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("AIMMergingCallback: the model has no trainable parameters to merge "
                              "(add a LoRA adapter first, e.g. peft.get_peft_model)")
        self._rows_collate = trainer_collate(train_dataloader)
        self._was_seq2seq = self._seq2seq(model)
        host = TrainerHost(model, self._collate(model, processing_class),
                           self._seq2seq(model), not isinstance(self.memory, TokenizedMemory),
                           cfg.train.max_grad_norm, bool(args.fp16))
        if len(self.memory):            # the memory batches of this task, tried before step 1
            check_memory_batch(host.collate, self.memory.examples()[0],
                               "AIMMergingCallback: the replay memory's first example",
                               shifted=not host.is_seq2seq)
        rehearsal = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay,
                                      betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        ctl, ifm = self._controller(cfg)
        self.last_merge = None
        passes = MemoryPasses(cfg, self.memory, host, self.timing, self.counters)
        self.engine = MergingEngine(passes, ctl, rehearsal, ifm, self.traces)
        if resuming:
            restore(self, self._pending, host.device)
            self._pending = self._next_name = None
            self._state = state
            return
        index = self.task["index"] + 1
        name = self._next_name or f"task{index + 1}"
        if self._next_name is not None and self._next_name == self.task["name"]:
            index -= 1          # the task under way, named again: it starts over (no finish_task)
            self.traces.drop_stage(index + 1)
        if name in self.memory.tasks:
            raise ConfigError(f"AIMMergingCallback: task {name!r} is finished already (it is in "
                              f"the replay memory); call start_task(name) with a new name first")
        warn_task_start(self, name, index, self._next_name is not None, args)
        self.task = {"index": index, "name": name}
        self._next_name = None
        self._state = state
        self.engine.task = (index, name)
        self.engine.before_task(model)

    def on_train_end(self, args, state, control, **kwargs):
        self._state = None
        self._write_traces(args, state)
        warn_task_end(self, state.global_step)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.engine.on_gradients(model, "new")

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self._lr = float(optimizer.param_groups[0]["lr"])   # the rate this step used

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        step = state.global_step           # a train() is a task: its steps count from 1
        main = getattr(optimizer, "optimizer", optimizer)      # past Accelerate's wrapper
        try:
            self.last_merge = merged = self.engine.after_step(model, step, self._lr,
                                                              main_optimizer=main)
        except ValueError as exc:
            raise TrainingError(f"AIMMergingCallback: task {self.task['name']}, step {step}: "
                                f"{' '.join(str(exc).split())}") from exc
        self.traces.signals.append({"task": self.task["name"], "stage": self.task["index"] + 1,
                                    "step": step, "train_loss": None, "lr": self._lr,
                                    "history_loss": None, "threshold": None, "interval": None,
                                    **self.engine.signal})
        if merged is not None:
            self._write_traces(args, state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        rows = self.traces.signals
        loss = (logs or {}).get("loss")
        if rows and loss is not None and rows[-1]["step"] == state.global_step:
            rows[-1]["train_loss"] = float(loss) if math.isfinite(float(loss)) else None

    def on_save(self, args, state, control, **kwargs):
        from .callback_state import write_state

        if state.is_world_process_zero:
            write_state(self, Path(args.output_dir) / f"checkpoint-{state.global_step}",
                        state.global_step)
        self._write_traces(args, state)

    def _write_traces(self, args, state) -> None:
        if state.is_world_process_zero:
            self.traces.write(Path(self.output_dir or args.output_dir))

