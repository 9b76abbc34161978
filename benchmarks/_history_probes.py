"""The overhead benchmark's probes of the history loss on a trained model (:mod:`.overhead`):
its time and sampling noise by memory batch size and precision (:func:`history_sweep`), what
the merge controller does with losses that only sampling moves (:func:`signal_noise`,
:func:`sampling_activations`), and the shared-prefix pass against the plain one
(:func:`prefix_probe`). Each runs at fixed parameters, after training."""

from __future__ import annotations

import random
import statistics
import time

import torch

from ._common import memory_subset

HISTORY_BATCH_SIZES = (8, 4, 2, 1)
PRECISIONS = ("model", "bfloat16")   # method.history_precision, as resolved per model


def history_sweep(trainer, draws: int, step_seconds: float) -> dict:
    """Time and noise of the history loss at several memory batch sizes, at fixed parameters,
    as the model runs (``model``) and under bfloat16 autocast (``bfloat16``)."""
    cfg = trainer.cfg.method
    saved = cfg.history_batch_size, cfg.history_precision
    out: dict = {}
    try:
        for precision in PRECISIONS:
            cfg.history_precision = precision
            for b in HISTORY_BATCH_SIZES:
                cfg.history_batch_size = b
                trainer.passes.history_loss(("sweep", b, -1))      # warm-up (tokenisation cache, allocator)
                times, losses = [], []
                for i in range(draws):
                    t0 = time.perf_counter()
                    losses.append(trainer.passes.history_loss(("sweep", b, i)))
                    times.append(time.perf_counter() - t0)
                mean = statistics.fmean(losses)
                std = statistics.stdev(losses) if len(losses) > 1 else float("nan")
                sec = statistics.median(times)
                out.setdefault(precision, {})[str(b)] = {
                    "seconds_per_call": sec, "monitor_to_step_ratio": sec / step_seconds,
                    "loss_mean": mean, "loss_std": std,
                    "loss_relative_std": std / mean if mean else float("nan"), "draws": draws}
    finally:
        cfg.history_batch_size, cfg.history_precision = saved
    return out


def per_example_losses(trainer, precision: str) -> list[tuple[float, int]]:
    """(summed answer-token loss, answer tokens) of every memory example, one pass each."""
    from aimmerging.losses import IGNORE_INDEX, batch_loss
    from aimmerging.monitoring import history_autocast

    out = []
    trainer.model.eval()
    try:
        for ex in trainer.memory.examples():
            batch = trainer._to_device(trainer.encoder.train_batch([ex]))
            with torch.no_grad(), history_autocast(precision, trainer.model):
                loss = float(batch_loss(trainer.model, batch, trainer.encoder.is_seq2seq))
            scored = batch["labels"] if trainer.encoder.is_seq2seq else batch["labels"][:, 1:]
            n = int((scored != IGNORE_INDEX).sum()) or 1
            out.append((loss * n, n))
    finally:
        trainer.model.train()
    return out


def sampling_activations(losses: list[tuple[float, int]], sizes, controller_config,
                         trials: int = 5000, seed: int = 0) -> dict:
    """What the merge controller does with history losses that only sampling moves.

    Each trial runs one merge interval of a fresh :class:`~aimmerging.controller.MergeController`
    (the run's settings, S = s_init) on losses of fresh memory batches of ``b`` of ``losses``
    (per example: summed answer-token loss and token count; a batch's loss is token-weighted,
    as the history pass's) until it merges. Per memory batch ``b``: ``per_step``, the share
    of monitored steps after calibration whose loss crosses the forgetting threshold
    (gamma_forget x the calibration mean); ``activated_merges``, the share of intervals that
    merge with at least one activation, hence alpha_past > 0 (SPEC.md on_merge step 3), where
    losses at fixed parameters should defer the merge to the 2S limit with none;
    ``early_merges``, the share that merge before S. An interval that has not merged after
    4 x S steps (possible only without the 2S limit, e.g. the -LS ablation) ends unmerged.
    """
    from aimmerging.controller import MergeController

    rng = random.Random(seed)

    def draw(b: int) -> float:
        rows = rng.sample(losses, min(b, len(losses)))
        return sum(r[0] for r in rows) / sum(r[1] for r in rows)

    out = {}
    for b in sizes:
        hits = monitored = activated = early = 0
        for _ in range(trials):
            ctl = MergeController(controller_config)
            s = ctl.interval
            for _ in range(4 * s):
                before, calibrating = ctl.activations, ctl.threshold is None
                merged = ctl.observe(draw(b))
                if not calibrating:
                    monitored += 1
                    hits += ctl.activations > before
                if merged:
                    activated += ctl.activations > 0
                    early += ctl.steps_since_merge < s
                    break
        out[str(b)] = {"per_step": hits / monitored if monitored else float("nan"),
                       "activated_merges": activated / trials, "early_merges": early / trials}
    return out


def signal_noise(trainer) -> dict:
    """The forgetting signal's sampling noise by memory batch (:func:`sampling_activations`,
    from every memory example's loss at the trained parameters, in the run's precision), with
    the memory as while the run's last task trained (``during_last_task``: the earlier tasks'
    examples) and as a next task would start (``all_tasks``); and how far bfloat16 moves each
    example's loss."""
    from aimmerging.controller import ControllerConfig
    from aimmerging.monitoring import history_dtype

    config = getattr(trainer.method, "controller_config", None) or ControllerConfig()
    memory = trainer.memory
    n_last = len(memory.examples(memory.tasks[-1:]))
    exact, low = (per_example_losses(trainer, p) for p in PRECISIONS)
    diffs = [abs(a[0] / a[1] - b[0] / b[1]) for a, b in zip(exact, low)]
    low_used = history_dtype(trainer.cfg.method.history_precision, trainer.model) is not None
    used = low if low_used else exact
    memories = {"during_last_task": used[:len(used) - n_last], "all_tasks": used}
    return {"precision": "bfloat16" if low_used else "model",
            "interval": config.s_init, "gamma_forget": config.gamma_forget, "f_max": config.f_max,
            **{name: {"memory_examples": len(ls),
                      "loss_mean": sum(r[0] for r in ls) / sum(r[1] for r in ls),
                      "sampling_activations": sampling_activations(ls, HISTORY_BATCH_SIZES, config)}
               for name, ls in memories.items() if ls},
            "bfloat16_max_abs_example_loss_difference": max(diffs),
            "bfloat16_mean_abs_example_loss_difference": statistics.fmean(diffs)}


def _time_history(trainer, draws: int) -> dict:
    """Median seconds per history-loss call over ``draws`` seeded draws, and the losses."""
    trainer.passes.history_loss(("prefix", -1))                 # warm-up
    times, losses = [], []
    for i in range(draws):
        t0 = time.perf_counter()
        losses.append(trainer.passes.history_loss(("prefix", i)))
        times.append(time.perf_counter() - t0)
    return {"seconds_per_call": statistics.median(times), "losses": losses}


def prefix_probe(trainer, draws: int) -> dict:
    """The history loss at the run's memory batch with and without shared-prefix passes.

    Same draws, same parameters, with every task of the run in memory and with the first
    task's examples alone (as while training the second task); ``plain_to_shared_ratio`` > 1
    means sharing is faster, ``max_abs_loss_difference`` is the float rounding between the two.
    """
    cfg, full = trainer.cfg.method, trainer.memory
    first = memory_subset(full, full.tasks[:1])
    saved = cfg.history_share_prefix
    out: dict = {}
    try:
        for name, memory in (("all_tasks", full), ("first_task", first)):
            trainer.passes.memory = memory
            timed = {}
            for share in (False, True):
                cfg.history_share_prefix = share
                timed[share] = _time_history(trainer, draws)
            plain, shared = timed[False], timed[True]
            out[name] = {"tasks_in_memory": len(memory.tasks),
                         "plain_seconds_per_call": plain["seconds_per_call"],
                         "shared_seconds_per_call": shared["seconds_per_call"],
                         "plain_to_shared_ratio": plain["seconds_per_call"] / shared["seconds_per_call"],
                         "max_abs_loss_difference": max(abs(a - b) for a, b in
                                                        zip(plain["losses"], shared["losses"]))}
    finally:
        cfg.history_share_prefix, trainer.passes.memory = saved, full
    return {**out, "draws": draws}
