"""``aimmerging`` with per-rank instrumentation, for tests/test_multiprocess.py.

Launch exactly like the command line, e.g.::

    torchrun --nproc_per_node 2 tests/mp_run.py run CONFIG --output RUN_DIR --quiet

Each rank writes ``$AIMM_MP_DEBUG/rank<R>.json`` (a folder outside the run folder) with:

- ``merges``: one record per merge: stage, step, the merge trace row and a SHA-256 of the
  trainable parameters right after the fusion;
- ``signals``: the rank's step signals (train loss, history loss, interval ...);
- ``shards``: the example ids this rank got from every ``shard`` call (main and memory batches);
- ``final_hash``: the hash of the trainable parameters at the end;
- ``world``/``rank``/``distributed_type``: what Accelerate set up;
- ``resumed``: whether the run went on from a checkpoint;
- ``writes``: on ranks other than 0, every attempt to create, write, rename or remove a
  path inside the run folder (seen through Python's audit hooks); it must stay empty.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path


def _param_hash(net) -> str:
    h = hashlib.sha256()
    for name, p in sorted((n, p) for n, p in net.named_parameters() if p.requires_grad):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> int:
    argv = sys.argv[1:]
    rank = int(os.environ.get("RANK", "0"))
    debug = Path(os.environ["AIMM_MP_DEBUG"])
    run_dir = os.path.abspath(argv[argv.index("--output") + 1])
    record: dict = {"rank": rank, "merges": [], "shards": [], "writes": []}

    if rank != 0:
        def audit(event, args):
            paths = ()
            if event == "open":
                path, mode, flags = args
                if isinstance(path, (str, bytes, os.PathLike)) and (
                        (isinstance(mode, str) and any(c in mode for c in "wax+"))
                        or (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR
                                                                  | os.O_CREAT))):
                    paths = (path,)
            elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate",
                           "os.chmod", "os.utime"):
                paths = (args[0],)
            elif event == "os.rename":
                paths = args[:2]
            for p in paths:
                if isinstance(p, int):
                    continue
                p = os.fsdecode(p)
                full = os.path.abspath(p)
                if full == run_dir or full.startswith(run_dir + os.sep):
                    record["writes"].append(f"{event} {p}")

        sys.addaudithook(audit)

    from aimmerging import cli
    from aimmerging.engine import MergingEngine
    from aimmerging.loop import ContinualTrainer

    original_after_step = MergingEngine.after_step

    def after_step(self, model, step, *args, **kwargs):
        row = original_after_step(self, model, step, *args, **kwargs)
        if row is not None:
            record["merges"].append({"stage": self.task[0], "step": step, "row": dict(row),
                                     "hash": _param_hash(model)})
        return row

    MergingEngine.after_step = after_step

    original_shard = ContinualTrainer.shard

    def shard(self, examples):
        out = original_shard(self, examples)
        record["shards"].append([ex.id for ex in out])
        return out

    ContinualTrainer.shard = shard

    # AIMM_MP_CRASH="STAGE:STEP" (0-based stage): every rank dies (os._exit) right after that
    # optimizer step, as a kill would leave it: the checkpoint is the last one written
    crash = os.environ.get("AIMM_MP_CRASH")
    if crash:
        crash_at = tuple(int(x) for x in crash.split(":"))
        original_stage, original_step = ContinualTrainer._train_stage, ContinualTrainer._optimizer_step

        def train_stage(self, stage, start_step):
            self._mp_stage = stage.index
            return original_stage(self, stage, start_step)

        def optimizer_step(self, group, examples, sched):
            loss = original_step(self, group, examples, sched)
            if (self._mp_stage, sched.last_epoch) == crash_at:
                os._exit(137)
            return loss

        ContinualTrainer._train_stage = train_stage
        ContinualTrainer._optimizer_step = optimizer_step

    original_run = ContinualTrainer.run

    def run(self, resume=False):
        record["resumed"] = resume
        try:
            return original_run(self, resume)
        finally:
            record.update(world=self.world, distributed_type=str(self.accelerator.distributed_type),
                          signals=self.writer.traces.signals, final_hash=_param_hash(self.net),
                          trace_merges=self.writer.traces.merges)

    ContinualTrainer.run = run
    try:
        code = cli.main(argv)
    finally:
        debug.mkdir(parents=True, exist_ok=True)
        writes = list(record["writes"])
        record["writes"] = writes
        (debug / f"rank{rank}.json").write_text(json.dumps(record, default=str), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
