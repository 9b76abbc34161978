"""Two tasks with a Trainer and AIMMergingCallback on every rank, for tests/test_callback_mp.py.

    torchrun --nproc_per_node 2 tests/mp_callback.py OUT

Each rank writes ``OUT/rank<R>.json``: the world size, the merge records with a SHA-256 of the
trainable parameters right after each merge, the step signals (the reduced history losses the
controller saw) and the hash of the parameters at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _param_hash(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted((n, p) for n, p in model.named_parameters() if p.requires_grad):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> int:
    from transformers import TrainerCallback

    from aimmerging import AIMMergingCallback
    from test_callback import train_tasks

    out = Path(sys.argv[1])
    rank = int(os.environ.get("RANK", "0"))
    callback = AIMMergingCallback(method="aimmerging", s_init=2, memory_size=8,
                                  skip_idle_rehearsal=False)   # every merge rehearses
    record: dict = {"rank": rank, "merges": []}

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            merges = callback.traces.merges
            if merges and merges[-1]["step"] == state.global_step \
                    and merges[-1]["task"] == callback.task["name"]:
                record["merges"].append({"row": merges[-1], "hash": _param_hash(model)})

    model = train_tasks(out / "run", callback, probes=([], [Probe()]),
                        per_device_train_batch_size=2)[0]           # 8 steps a task
    import torch.distributed as dist

    record.update(world=dist.get_world_size() if dist.is_initialized() else 1,
                  signals=[{k: v for k, v in s.items() if k != "train_loss"}
                           for s in callback.traces.signals],
                  final_hash=_param_hash(model))
    (out / f"rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
