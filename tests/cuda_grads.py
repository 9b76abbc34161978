"""The gradients one main step hands to AdamW, after clipping, under ``train.mixed_precision``.

For tests/test_cuda.py (a process per precision: Accelerate keeps one mixed precision per
process)::

    python tests/cuda_grads.py PRECISION OUT.safetensors [MAX_GRAD_NORM]

builds the loop's :class:`~aimmerging.loop.ContinualTrainer` (tiny-llama, the demo stream,
LoRA dropout 0, the main and the rehearsal AdamW prepared together, as in a run), runs
``loss_on`` -> ``accelerator.backward`` -> ``_clip(optimizer)`` on the first 8 training
examples of the first task, and saves every trainable parameter's gradient (float32, CPU)
with the loss scale that was in force under ``__scale__``.
"""

from __future__ import annotations

import sys
import tempfile


def main(precision: str, out: str, max_grad_norm: str = "none") -> None:
    import torch
    from safetensors.torch import save_file

    from aimmerging.config import build_config
    from aimmerging.loop import ContinualTrainer
    from aimmerging.runner import load_tasks

    norm = None if max_grad_norm == "none" else float(max_grad_norm)
    cfg = build_config({"seed": 0, "data": {"dir": None, "tasks": ["demo_sentiment"], "n_train": 16,
                                            "n_test": 2},
                        "model": {"name": "tiny-llama", "lora_dropout": 0.0},
                        "method": {"name": "seq_lora"},
                        "train": {"mixed_precision": precision, "max_grad_norm": norm}}, "cuda check")
    tasks = load_tasks(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        tr = ContinualTrainer(cfg, tmp, tasks, progress=False)
        torch.manual_seed(1)
        with torch.no_grad():        # LoRA B starts at 0: give A's gradient something to carry
            for name, p in tr.net.named_parameters():
                if p.requires_grad and "lora_B" in name:
                    p.normal_(0, 0.02)
        tr.model.train()
        loss = tr.loss_on(tasks[0].train[:8])
        tr.accelerator.backward(loss)
        tr._clip(tr.optimizer)
        scaler = getattr(tr.accelerator, "scaler", None)
        grads = {n: p.grad.detach().float().cpu().contiguous()
                 for n, p in tr.net.named_parameters() if p.requires_grad}
        grads["__scale__"] = torch.tensor([scaler.get_scale() if scaler is not None else 1.0])
        grads["__device_is_cuda__"] = torch.tensor([float(tr.accelerator.device.type == "cuda")])
        save_file(grads, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
