"""Two tasks with a stock ``transformers.Trainer`` and :class:`aimmerging.AIMMergingCallback`.

One LoRA adapter is trained through two tasks of the built-in demo stream (no download,
no data files). The callback is the only AIMMerging part: it keeps nothing from the first
task (its replay memory is empty), and in the second it measures the history loss after
every optimizer step, merges when the controller says so, and writes ``merge_trace.csv``
and ``signals.csv`` to ``--output``::

    python examples/hf_trainer.py --model tiny-llama --output runs/hf_tiny --threads 1   # 15 s of CPU time
    python examples/hf_trainer.py --model smollm2-135m --output runs/hf_smollm2

Each task's test accuracy is printed after it (tiny-llama is a random model: expect 0).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def accuracy(model, encoder, task, batch_size: int = 16) -> float:
    """Exact-match accuracy (percent) of greedy answers on ``task``'s test examples."""
    from aimmerging.evaluation import generate
    from aimmerging.scoring import score_one

    preds = generate(model, encoder, [ex.input for ex in task.test], batch_size, max_new_tokens=4)
    return 100.0 * sum(score_one("accuracy", p, ex.output) for p, ex in zip(preds, task.test)) \
        / len(task.test)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny-llama", help="tiny-llama, smollm2-135m, a hub name "
                                                              "or a local folder")
    parser.add_argument("--output", required=True, help="folder for the traces (and the Trainer's files)")
    parser.add_argument("--n-train", type=int, default=96, help="training examples per task")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--max-steps", type=int, default=-1, help="optimizer steps per task "
                                                                  "(-1: from --epochs)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads "
                                                                  "(default: torch's choice)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import Trainer, TrainingArguments

    from aimmerging import AIMMergingCallback
    from aimmerging.batching import Encoder
    from aimmerging.data.demo import demo_stream
    from aimmerging.models import add_lora, load_backbone
    from aimmerging.runner import quiet_libraries

    quiet_libraries()                               # no loading bars and notices
    torch.manual_seed(0)
    backbone = load_backbone(args.model)
    model = add_lora(backbone)                      # LoRA r=8 on q_proj/v_proj (PEFT)
    encoder = Encoder(backbone.tokenizer, backbone.is_seq2seq, max_input_tokens=128,
                      max_target_tokens=8)
    tasks = demo_stream(n_train=args.n_train, n_test=24)[:2]

    # the replay memory starts empty and grows by 16 examples per finished task
    callback = AIMMergingCallback(method="aimmerging", s_init=4, memory_size=16)
    for task in tasks:
        callback.start_task(task.info.name)
        training = TrainingArguments(
            output_dir=args.output, per_device_train_batch_size=8, num_train_epochs=args.epochs,
            max_steps=args.max_steps, learning_rate=3e-3 if args.model.startswith("tiny") else 3e-4,
            lr_scheduler_type="linear", warmup_steps=0.06, logging_steps=5, save_strategy="no",
            report_to="none", use_cpu=not torch.cuda.is_available(), remove_unused_columns=False,
            disable_tqdm=True, seed=42)
        trainer = Trainer(model=model, args=training, train_dataset=task.train,
                          data_collator=encoder.train_batch, processing_class=backbone.tokenizer,
                          callbacks=[callback])
        trainer.train()
        callback.finish_task(task.train)
        scores = ", ".join(f"{t.info.name} {accuracy(model, encoder, t):.1f}"
                           for t in tasks[:tasks.index(task) + 1])
        print(f"after {task.info.name}: accuracy {scores}")

    trace = Path(args.output) / "merge_trace.csv"
    with open(trace, newline="", encoding="utf-8") as fh:
        merges = list(csv.DictReader(fh))
    print(f"{len(merges)} merges in {trace}")
    for m in merges:
        print(f"  {m['task']} step {m['step']}: after {m['interval_run']} steps, "
              f"activations {m['activations']}, weights (alpha_new {m['alpha_new']}, "
              f"alpha_past {m['alpha_past']}), merge interval S now {m['next_interval']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
