"""The run folder: what a finished (or interrupted) run leaves behind.

::

    RUN_DIR/
      config.yaml            the resolved config
      run.log                the log
      metrics.json           OP, BWT, FWT (when single-task scores are given), per-task scores
      accuracy_matrix.csv    a[i][j]: score (percent) on task i after stage j; also .json
      merge_trace.csv        one row per merge
      signals.csv            one row per optimizer step
      predictions/stageNN_<task>.jsonl
      adapters/stageNN_<task>/   a PEFT adapter (PeftModel.from_pretrained loads it)
      checkpoint/            the newest complete checkpoint (see aimmerging.checkpoint)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

from .config import RunConfig, dump_config
from .io import atomic_write_json, atomic_write_text, temporary_folder
from .metrics import AccuracyMatrix, compute_metrics
from .traces import Traces

log = logging.getLogger("aimmerging")


def stage_dirname(stage) -> str:
    """``stage03_yahoo``: the folder name of a stage's adapter and predictions."""
    return f"stage{stage.index + 1:02d}_{stage.name}"


class ResultWriter:
    """Writes the run folder (only on the main process; other ranks keep the state only)."""

    def __init__(self, run_dir: Path, cfg: RunConfig, task_names: list[str], is_main: bool) -> None:
        self.run_dir, self.cfg, self.task_names, self.is_main = Path(run_dir), cfg, task_names, is_main
        self.matrix = AccuracyMatrix(task_names)
        self.traces = Traces()

    def start(self) -> None:
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", dump_config(self.cfg))

    def save_predictions(self, stage, task, preds: list[str]) -> None:
        if not self.is_main:
            return
        lines = [json.dumps({"id": ex.id, "input": ex.input, "output": ex.output, "prediction": p},
                            ensure_ascii=False) for ex, p in zip(task.test, preds)]
        name = f"{stage_dirname(stage)}__{task.info.name}.jsonl"
        atomic_write_text(self.run_dir / "predictions" / name, "\n".join(lines) + "\n")

    def save_adapter(self, net, stage) -> None:
        """Save the stage's adapter as a PEFT folder (safetensors), atomically."""
        if not self.is_main:
            return
        dest = self.run_dir / "adapters" / stage_dirname(stage)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_folder(dest.parent, ".adapter.")
        try:
            net.save_pretrained(str(tmp), safe_serialization=True)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def log_column(self, stage) -> None:
        scores = ", ".join(f"{self.task_names[t]}={self.matrix.get(t, stage.column):.1f}"
                           for t in stage.eval_tasks if self.matrix.get(t, stage.column) is not None)
        log.info("after %s: %s", stage.name, scores)

    def write_tables(self) -> None:
        if self.is_main:
            self.matrix.save(self.run_dir)
            self.traces.write(self.run_dir)

    def metrics(self, method, timing: dict, counters: dict, summary: dict) -> dict:
        """metrics.json's content: OP/BWT/FWT (SPEC.md) plus per-task scores, merges and timings."""
        rows = self.matrix.to_list()
        k = len(self.task_names)
        out: dict = {"method": self.cfg.method.name, "seed": self.cfg.seed, "tasks": self.task_names}
        a0 = None
        if self.cfg.single_task_scores:
            a0 = [self.cfg.single_task_scores.get(t) for t in self.task_names]
            if any(v is None for v in a0):
                missing = [t for t, v in zip(self.task_names, a0) if v is None]
                log.warning("single_task_scores lacks %s: FWT not computed", ", ".join(missing))
                a0 = None
        if method.name == "single_task":
            diag = {t: rows[i][i] for i, t in enumerate(self.task_names)}
            out.update({"op": _mean(diag.values()), "bwt": None, "fwt": None,
                        "single_task_scores": diag})
        elif all(rows[i][k - 1] is not None for i in range(k)):
            diag_ok = all(rows[i][i] is not None for i in range(k))
            if diag_ok:
                out.update(compute_metrics(rows, a0))
            else:   # mtl: only the last column
                out.update({"op": _mean(rows[i][k - 1] for i in range(k)), "bwt": None, "fwt": None})
            out["final_scores"] = {t: rows[i][k - 1] for i, t in enumerate(self.task_names)}
        out.update(summary)
        out["timing_seconds"] = {k2: round(v, 3) for k2, v in timing.items()}
        out["counters"] = dict(counters)
        out["accuracy_matrix"] = rows
        return out

    def finish(self, method, timing: dict, counters: dict, summary: dict) -> dict:
        metrics = self.metrics(method, timing, counters, summary)
        if self.is_main:
            self.write_tables()
            atomic_write_json(self.run_dir / "metrics.json", metrics)
        return metrics

    def state_dict(self) -> dict:
        return {"matrix": self.matrix.to_json_dict(), "traces": self.traces.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.matrix = AccuracyMatrix.from_json_dict(state["matrix"])
        self.traces.load_state_dict(state["traces"])


def _mean(values) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
