"""The reference a user would pick instead of our loop: transformers' ``Trainer`` on a PEFT LoRA model.

Same data, model, LoRA adapter, tokenisation (:class:`aimmerging.batching.Encoder`,
so the same sequence lengths and padding), batch size, learning-rate schedule,
gradient clipping and number of steps as ``aimmerging run`` with ``seq_lora``; the
examples are fed in the very order our loop uses (its seeded permutation, sequential
sampler), so both sides see identical batches. Trainer's own defaults are kept
otherwise (its default optimizer, ``adamw_torch_fused``).

Used in-process by ``throughput.py`` and as a script by ``memory.py`` (a process of
its own, so that its peak resident memory is its own)::

    python benchmarks/hf_trainer.py '{"model": "smollm2-135m", "tasks": ["dbpedia"], ...}'

prints one JSON line with the figures. Absolute imports only (runs as a script).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM; ru_maxrss where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            return int(next(line.split()[1] for line in f if line.startswith("VmHWM:"))) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config(spec: dict):
    from aimmerging.config import build_config

    return build_config({
        "seed": spec.get("seed", 42),
        "data": {"dir": spec["data_dir"], "tasks": spec["tasks"], "n_train": spec["n_train"],
                 "n_test": 1, "max_input_tokens": spec["max_input_tokens"],
                 "max_target_tokens": spec["max_target_tokens"]},
        "model": {"name": spec["model"]},
        "method": {"name": "seq_lora"},
        "train": {"epochs": 1, "batch_size": spec["batch_size"], "lr": spec.get("lr", 3e-4),
                  "max_steps_per_task": spec["steps"]},
    })


def ordered_examples(cfg, task, stage_index: int) -> list:
    """The task's training examples in the order our loop feeds them (epoch 0)."""
    import torch

    from aimmerging.loop import seed_key

    gen = torch.Generator().manual_seed(seed_key(cfg.seed, "order", stage_index, 0))
    perm = torch.randperm(len(task.train), generator=gen).tolist()
    return [task.train[i] for i in perm]


def run_trainer(spec: dict) -> dict:
    """Train with ``Trainer`` (one ``train()`` per task, as a user would chain tasks); returns figures.

    ``spec``: model, tasks, data_dir, n_train, steps (per task), batch_size,
    max_input_tokens, max_target_tokens, optional seed, lr, threads.
    """
    import torch
    import transformers
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from aimmerging.batching import Encoder
    from aimmerging.models import add_lora, load_backbone
    from aimmerging.runner import load_tasks

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    cfg = _config(spec)
    t_start = time.perf_counter()
    tasks = load_tasks(cfg)
    mc = cfg.model
    torch.manual_seed(cfg.seed)
    backbone = load_backbone(mc.name)
    torch.manual_seed(cfg.seed)
    model = add_lora(backbone, mc.lora_r, mc.lora_alpha, mc.lora_dropout, mc.target_modules)
    encoder = Encoder(backbone.tokenizer, backbone.is_seq2seq, cfg.data.max_input_tokens,
                      cfg.data.max_target_tokens)
    steps, bs = spec["steps"], spec["batch_size"]
    train_runtime = wall = 0.0
    tokens = 0
    with tempfile.TemporaryDirectory(prefix="bench_hf_trainer_") as tmp:
        for k, task in enumerate(tasks):
            data = ordered_examples(cfg, task, k)[: steps * bs]
            args = TrainingArguments(
                output_dir=tmp, per_device_train_batch_size=bs, max_steps=steps,
                learning_rate=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                warmup_steps=int(cfg.train.warmup_ratio * steps), lr_scheduler_type="linear",
                max_grad_norm=cfg.train.max_grad_norm, logging_strategy="no", save_strategy="no",
                report_to="none", use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
                dataloader_pin_memory=False, disable_tqdm=True, remove_unused_columns=False,
                train_sampling_strategy="sequential", seed=cfg.seed)
            trainer = Trainer(model=model, args=args, train_dataset=data,
                              data_collator=encoder.train_batch)   # tokenises lazily, as our loop
            trainer.remove_callback(PrinterCallback)
            t0 = time.perf_counter()
            out = trainer.train()
            wall += time.perf_counter() - t0
            tokens += sum(len(e.prompt) + len(e.answer) for e in encoder.encode(data))
            train_runtime += float(out.metrics.get("train_runtime", 0.0))
    return {"train_runtime": train_runtime, "train_wall_seconds": wall, "tokens": tokens,
            "steps": steps * len(tasks), "total_seconds": time.perf_counter() - t_start,
            "peak_rss_mib": peak_rss_mib(),
            "mean_loss": float(out.training_loss), "torch_threads": torch.get_num_threads()}


if __name__ == "__main__":
    print(json.dumps(run_trainer(json.loads(sys.argv[1]))), flush=True)
