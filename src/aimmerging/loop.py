"""The continual-learning loop: one process (or one Accelerate process group) runs a task order.

For each stage (normally one task): reset the optimizer state, train with AdamW
and a linear warm-up/decay schedule, call the method's hooks after every
optimizer step and after the task, evaluate the tasks seen so far (one column of
the accuracy matrix), save the stage's adapter and a checkpoint. The loop knows
nothing of AIMMerging: that lives in :mod:`aimmerging.methods.merging`.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import torch

from . import checkpoint as ckpt
from .batching import Encoder
from .config import RunConfig, flat_config
from .engine import MemoryPasses, seed_key
from .errors import TrainingError, one_line
from .fusion import copy_into_, snapshot
from .losses import IGNORE_INDEX, batch_loss
from .memory import ReplayMemory
from .methods.base import Stage
from .models import add_lora, backbone_dtype, load_backbone, resolve_mixed_precision
from .monitoring import history_key
from .prefix import can_share_prefix, grouped_loss, training_shares_prefix
from .results import ResultWriter

log = logging.getLogger("aimmerging")


def clip_gradients(accelerator, optimizer, parameters, max_norm: float) -> None:
    """Clip the gradients of ``parameters`` to a total 2-norm of ``max_norm``, unscaling under
    fp16 only those of ``optimizer``, the one about to step.

    ``Accelerator.clip_grad_norm_`` unscales every optimizer given to ``prepare``; the main
    and the rehearsal AdamW hold the same parameters, so each gradient would be divided by
    the loss scale twice (2**16 too small: clipping never acts and Adam's eps swamps the
    update). FSDP and DeepSpeed keep Accelerate's own clipping.
    """
    from accelerate.utils import DistributedType

    if (getattr(accelerator, "scaler", None) is None
            or accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)):
        accelerator.clip_grad_norm_(parameters, max_norm)
        return
    accelerator.unscale_gradients(optimizer=optimizer)
    torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)


class ContinualTrainer:
    """Trains one LoRA adapter through a task order with a continual-learning method.

    Args:
        cfg: the validated run config.
        run_dir: the run folder (created by the caller; see :mod:`aimmerging.results`).
        tasks: a list of :class:`~aimmerging.data.sampling.TaskData`, in training order.
        accelerator: an ``accelerate.Accelerator`` (one is made when None).
        progress: show tqdm progress bars on the main process.
    """

    def __init__(self, cfg: RunConfig, run_dir: Path, tasks: list, accelerator=None,
                 progress: bool = True) -> None:
        from accelerate import Accelerator

        from .methods import build_method

        self.cfg, self.run_dir, self.tasks = cfg, Path(run_dir), tasks
        self.task_names = [t.info.name for t in tasks]
        if accelerator is None:
            precision = resolve_mixed_precision(cfg.train.mixed_precision, cfg.model.name)
            accelerator = Accelerator(mixed_precision=precision, log_with=cfg.train.report_to,
                                      project_dir=str(run_dir))
        self.accelerator = acc = accelerator
        self.world, self.rank = acc.num_processes, acc.process_index
        self.share_prefix_in_training = training_shares_prefix(cfg, self.world)
        self.progress = progress and acc.is_main_process
        torch.manual_seed(cfg.seed)
        backbone = load_backbone(cfg.model.name, backbone_dtype(cfg.model.dtype))
        torch.manual_seed(cfg.seed)
        net = add_lora(backbone, cfg.model.lora_r, cfg.model.lora_alpha, cfg.model.lora_dropout,
                       cfg.model.target_modules)
        if cfg.model.gradient_checkpointing:
            net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            net.enable_input_require_grads()
        self.tokenizer = backbone.tokenizer
        self.encoder = Encoder(backbone.tokenizer, backbone.is_seq2seq,
                               cfg.data.max_input_tokens, cfg.data.max_target_tokens)
        self.memory = ReplayMemory(cfg.method.memory_ratio, cfg.method.memory_size, cfg.seed)
        self.method = build_method(cfg.method.name, self)
        self.method.prepare_model(net)                   # several adapters, a router ...
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        reh = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.model, self.optimizer, self.rehearsal_optimizer = acc.prepare(net, opt, reh)
        self.net = acc.unwrap_model(self.model)          # the PEFT model (fusion works on it)
        self.initial_adapter = snapshot(self.net)
        self.writer = ResultWriter(self.run_dir, cfg, self.task_names, acc.is_main_process)
        self.timing: dict[str, float] = defaultdict(float)
        self.counters: dict[str, int] = defaultdict(int)
        # memory batches, history loss and rehearsal (this trainer is the engine's host)
        self.passes = MemoryPasses(cfg, self.memory, self, self.timing, self.counters)
        self.stages = self.method.stages(len(tasks), cfg.data.eval_all_tasks)
        self.signal: dict = {}
        self.position = {"stage": 0, "step": 0}       # next stage; steps done in it
        self.scheduler, self._saved_schedule = None, None
        if cfg.train.report_to:
            acc.init_trackers("aimmerging", config=flat_config(cfg))

    # --- helpers used by methods; the engine's host (aimmerging.engine.Host) -------------
    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.accelerator.device) for k, v in batch.items()}

    def loss_on(self, examples: list, share_prefix: Optional[bool] = None) -> torch.Tensor:
        """Mean token loss of ``examples``; logits only where labelled; ``share_prefix``: :mod:`.prefix`
        (default: ``train.share_prefix`` on one process without gradient checkpointing)."""
        batch = self._to_device(self.encoder.train_batch(examples))
        share_prefix = self.share_prefix_in_training if share_prefix is None else share_prefix
        if share_prefix and not self.encoder.is_seq2seq and can_share_prefix(self.model):
            # ranks may group differently: their passes must not be DDP collectives (no grad here)
            loss = grouped_loss(self.model if self.world == 1 else self.net, batch)
        else:
            loss = batch_loss(self.model, batch, self.encoder.is_seq2seq)
        return loss if self.world == 1 else self._token_weighted(loss, batch)

    def _token_weighted(self, loss: torch.Tensor, batch: dict) -> torch.Tensor:
        """This rank's mean token loss times ``world * n_rank / n_all`` (labelled tokens), so that
        the mean over ranks (DDP's gradient average, :meth:`reduce_mean`) is the mean over all
        ranks' tokens, as one process computes it for the whole batch (docs/performance.md,
        "Several processes"). One all-reduce of a count."""
        labels = batch["labels"] if self.encoder.is_seq2seq else batch["labels"][:, 1:]
        n = (labels != IGNORE_INDEX).sum().to(torch.float64)
        total = self.accelerator.reduce(n.clone(), "sum")
        if not total > 0:
            return loss
        return loss * (n * self.world / total).to(loss.dtype)

    def shard(self, examples: list) -> list:
        return examples if self.world == 1 else (examples[self.rank::self.world] or examples[:1])

    def _stopped(self, task, step, what: str) -> TrainingError:
        """The error that stops a run at ``task``/``step``, naming the checkpoint that is kept."""
        found = ckpt.find_checkpoint(self.run_dir)
        kept = f"the last checkpoint ({found}) is kept" if found else "no checkpoint written yet"
        return TrainingError(f"task {task}, step {step}: {what}; stopped, {kept}")

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip(self, optimizer) -> None:
        """Clip the gradients that ``optimizer`` is about to apply (``train.max_grad_norm``)."""
        if self.cfg.train.max_grad_norm:
            clip_gradients(self.accelerator, optimizer, self.model.parameters(),
                           self.cfg.train.max_grad_norm)

    def step(self, optimizer) -> None:
        optimizer.step()

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor, "mean")

    def reduce_mean(self, value: float) -> float:
        """The mean of a Python float over all ranks (the value itself on one process)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(t, "mean"))

    # --- the loop ---------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        """Train through every stage (continuing from the checkpoint when ``resume``); returns metrics."""
        if resume:
            self._restore()
            done = self.run_dir / "metrics.json"
            if self.position["stage"] >= len(self.stages) and done.is_file():
                import json                     # a finished run is left as it was written

                self.accelerator.end_training()
                return json.loads(done.read_text(encoding="utf-8"))
        self.writer.start()
        for stage in self.stages[self.position["stage"]:]:
            self._train_stage(stage, start_step=self.position["step"])
            self.method.after_task(stage)
            self._evaluate(stage)
            trained = [stage.train_tasks] if self.method.resets_adapter else \
                [s.train_tasks for s in self.stages[:stage.index + 1]]
            self.writer.save_adapter(self.net, stage, self.method.save_adapter, trained,
                                     len(self.stages))
            self.position = {"stage": stage.index + 1, "step": 0}
            self._checkpoint()
        metrics = self.writer.finish(self.method, self.timing, self.counters,
                                     self.writer.traces.merge_counts())
        self.accelerator.end_training()
        return metrics

    def _stage_steps(self, n: int) -> tuple[int, int]:
        tc = self.cfg.train
        batches = math.ceil(n / (tc.batch_size * self.world))
        per_epoch = math.ceil(batches / tc.grad_accum)
        total = per_epoch * tc.epochs
        return per_epoch, min(total, tc.max_steps_per_task or total)

    def _train_stage(self, stage: Stage, start_step: int) -> None:
        from tqdm.auto import tqdm
        from transformers import get_linear_schedule_with_warmup

        tc, acc = self.cfg.train, self.accelerator
        examples = self.method.train_examples(stage)
        if not examples:
            raise TrainingError(f"task {stage.name}: no training examples")
        per_epoch, total = self._stage_steps(len(examples))
        warmup = int(tc.warmup_ratio * total)
        self.scheduler = sched = get_linear_schedule_with_warmup(self.optimizer, warmup, total)
        if start_step == 0:
            self.optimizer.state.clear()
            self.rehearsal_optimizer.state.clear()
            if self.method.resets_adapter:
                copy_into_(self.net, self.initial_adapter)
            self.method.before_task(stage)
        for _ in range(start_step):
            sched.step()
        saved, self._saved_schedule = self._saved_schedule, None
        if start_step and saved and saved != {"last_epoch": sched.last_epoch,
                                              "last_lr": sched.get_last_lr()}:
            raise TrainingError(f"task {stage.name}: the checkpoint's learning-rate schedule "
                                f"{saved} is not this run's at step {start_step}")
        gbs = tc.batch_size * self.world
        bar = tqdm(total=total, initial=start_step, desc=f"[{stage.index + 1}/{len(self.stages)}] "
                   f"{stage.name}", disable=not self.progress, dynamic_ncols=True, leave=True)
        step = 0
        self.model.train()
        mark = time.perf_counter()   # train_seconds grows step by step, so checkpoints hold it
        for epoch in range(tc.epochs):
            gen = torch.Generator().manual_seed(seed_key(self.cfg.seed, "order", stage.index, epoch))
            perm = torch.randperm(len(examples), generator=gen).tolist()
            chunks = [perm[i:i + gbs] for i in range(0, len(perm), gbs)]
            for s0 in range(0, len(chunks), tc.grad_accum):
                step += 1
                if step > total:
                    break
                if step <= start_step:
                    continue
                group = chunks[s0:s0 + tc.grad_accum]
                t0 = time.perf_counter()
                lr = sched.get_last_lr()[0]           # the rate this step uses (the schedule moves after it)
                try:
                    loss_value = self._optimizer_step(group, examples, sched)
                except RuntimeError as exc:   # an overflow in the optimizer, out of memory ...
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise self._stopped(stage.name, step, first) from exc
                self.timing["train_step_seconds"] += time.perf_counter() - t0
                if not math.isfinite(loss_value):
                    raise self._stopped(stage.name, step, f"training loss is {loss_value}")
                self.counters["train_steps"] += 1
                self.signal = {"task": stage.name, "stage": stage.index + 1, "step": step,
                               "train_loss": loss_value, "lr": lr}
                try:
                    self.method.after_step(stage, step, loss_value)
                    if (self.cfg.method.log_history_loss and "history_loss" not in self.signal
                            and len(self.memory) > 0):   # a method that does not measure it itself
                        self.signal["history_loss"] = self.passes.history_loss(
                            history_key(self.cfg, stage.index, step))
                except ValueError as exc:   # a non-finite history loss or l1 change ...
                    raise self._stopped(stage.name, step, " ".join(str(exc).split())) from exc
                self.writer.traces.signals.append(self.signal)
                if tc.report_to:
                    acc.log({k: v for k, v in self.signal.items() if isinstance(v, (int, float))
                             and v is not None}, step=self.counters["train_steps"])
                bar.set_postfix(self._postfix(), refresh=False)
                bar.update(1)
                if step % 25 == 0 or step == total:   # progress in run.log too (--quiet runs)
                    log.info("%s step %d/%d %s", stage.name, step, total, self._postfix())
                now = time.perf_counter()
                self.timing["train_seconds"], mark = self.timing["train_seconds"] + now - mark, now
                if tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < total:
                    self.position = {"stage": stage.index, "step": step}
                    self._checkpoint()
        bar.close()
        self.timing["train_seconds"] += time.perf_counter() - mark

    def _postfix(self) -> dict:
        s, merges = self.signal, len(self.writer.traces.merges)
        interval = {} if s.get("interval") is None else {"S": s["interval"]}
        return {"loss": f"{s['train_loss']:.3f}", **interval, "merges": merges}

    def _optimizer_step(self, group: list[list[int]], examples: list, sched) -> float:
        acc = self.accelerator
        total_loss = 0.0
        for i, idx in enumerate(group):
            local = self.shard([examples[j] for j in idx])
            last = i == len(group) - 1
            sync = acc.no_sync(self.model) if (not last and self.world > 1) else nullcontext()
            with sync:
                loss = self.loss_on(local)       # logged: the task loss alone (EWC's penalty apart)
                extra = self.method.extra_loss(self.net)
                acc.backward((loss if extra is None else loss + extra) / len(group))
            total_loss += float(loss.detach())
            if extra is not None and not torch.isfinite(extra):   # stops the run like a NaN loss
                total_loss = float("nan")
        self.clip(self.optimizer)
        self.method.on_gradients(self.net, "new")
        self.optimizer.step()
        sched.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.reduce_mean(total_loss / len(group))

    def _evaluate(self, stage: Stage) -> None:
        from tqdm.auto import tqdm

        from .evaluation import generate
        from .scoring import score_one

        t0 = time.perf_counter()
        acc, ec = self.accelerator, self.cfg.eval
        if acc.is_main_process:
            n = sum(len(self.tasks[t].test) for t in stage.eval_tasks)
            bar = tqdm(total=n, desc=f"  evaluate after {stage.name}", disable=not self.progress,
                       dynamic_ncols=True, leave=False)
            for t in stage.eval_tasks:
                task = self.tasks[t]
                preds = generate(self.net, self.encoder, [ex.input for ex in task.test],
                                 ec.batch_size, ec.max_new_tokens, progress=bar)
                scores = [score_one(task.info.metric, p, ex.output) for p, ex in zip(preds, task.test)]
                if not scores:
                    raise TrainingError(f"task {task.info.name}: no evaluation examples")
                self.writer.matrix.set(t, stage.column, 100.0 * sum(scores) / len(scores))
                self.writer.save_predictions(stage, task, preds, scores)
            bar.close()
        acc.wait_for_everyone()
        if self.world > 1:   # every rank holds the same accuracy matrix (and checkpoint state)
            from accelerate.utils import broadcast

            col = [self.writer.matrix.get(t, stage.column) for t in stage.eval_tasks]
            sent = torch.tensor([math.nan if v is None else v for v in col], dtype=torch.float64,
                                device=acc.device)
            got = broadcast(sent, from_process=0).cpu().tolist()
            for t, v in zip(stage.eval_tasks, got):
                if not math.isnan(v):
                    self.writer.matrix.set(t, stage.column, v)
        self.timing["eval_seconds"] += time.perf_counter() - t0
        self.writer.log_column(stage)

    # --- checkpoints --------------------------------------------------------------
    def _checkpoint(self) -> None:
        acc = self.accelerator
        rng = ckpt.gather_torch_rng(acc)
        if acc.is_main_process:
            state = {"position": self.position, "world": self.world,
                     "method": self.method.state_dict(), "memory": self.memory.state_dict(),
                     "rng": ckpt.python_rng_state(), "timing": dict(self.timing),
                     "scheduler": {"last_epoch": self.scheduler.last_epoch,
                                   "last_lr": self.scheduler.get_last_lr()}
                     if self.position["step"] else None,
                     "counters": dict(self.counters), **self.writer.state_dict()}
            ckpt.save_checkpoint(self.run_dir, state,
                                 {n: p for n, p in self.net.named_parameters() if p.requires_grad},
                                 {"optimizer": self.optimizer.state_dict(),
                                  "rehearsal_optimizer": self.rehearsal_optimizer.state_dict()},
                                 self.method.tensor_state(), rng)
            self.writer.write_tables()
        acc.wait_for_everyone()

    def _restore(self) -> None:
        if self.accelerator.is_main_process:
            ckpt.clean_partial(self.run_dir)
        self.accelerator.wait_for_everyone()
        found = ckpt.find_checkpoint(self.run_dir)
        if found is None:
            return
        data = ckpt.load_checkpoint(found, ckpt.OPTIMIZERS)
        state = data["state"]
        if state.get("world", 1) != self.world:
            raise TrainingError(f"{found}: the run was started with {state.get('world', 1)} "
                                f"process(es), not {self.world}; resume it with as many")
        try:
            self.method.load_state(state["method"], data["method_tensors"])   # may set what trains
            copy_into_(self.net, data["adapter"])
            self.optimizer.load_state_dict(data["optimizers"]["optimizer"])
            self.rehearsal_optimizer.load_state_dict(data["optimizers"]["rehearsal_optimizer"])
            self.memory.load_state_dict(state["memory"])
            self.writer.load_state_dict(state)
            self.timing.update(state.get("timing", {}))
            self.counters.update(state.get("counters", {}))
            self.position = {"stage": int(state["position"]["stage"]),
                             "step": int(state["position"]["step"])}
            ckpt.restore_rng(data["rng"], self.rank)
            ckpt.restore_python_rng(state.get("rng"))
            self._saved_schedule = state.get("scheduler")
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            msg = one_line(exc)
            raise TrainingError(f"{found}: checkpoint does not fit this run ({msg})") from None
        stage, step = self.position["stage"], self.position["step"]
        log.info("resumed from %s%s", found, ": the run had finished, nothing is left to train"
                 if stage >= len(self.stages) else f" at stage {stage + 1}, step {step}")
