"""The run folder: what a finished (or interrupted) run leaves behind.

::

    RUN_DIR/
      config.yaml            the resolved config
      run.log                the log
      metrics.json           OP, BWT, FWT (when single-task scores are given), per-task scores
      accuracy_matrix.csv    a[i][j]: score (percent) on task i after stage j; also .json
      example_scores.csv     each evaluation example's score (0-1) after each stage: the
                             matrix's cells per example, for bootstrap intervals (compare)
      merge_trace.csv        one row per merge
      signals.csv            one row per optimizer step
      predictions/stageNN_<task>.jsonl
      adapters/stageNN_<task>/   a PEFT adapter (PeftModel.from_pretrained loads it); for a
                             method with several adapters, one subfolder each and
                             adapters.json (aimmerging.multi_adapter); README.md: what
                             it was trained on and how to load it (aimmerging.model_card)
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
from .io import atomic_write_json, atomic_write_text, plain_permissions, temporary_folder
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
        #: {task name: {"ids": [...], "after": {stage column's task name: [score 0-1, ...]}}}
        self.example_scores: dict = {}

    def start(self) -> None:
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", dump_config(self.cfg))

    def save_predictions(self, stage, task, preds: list[str], scores: list[float]) -> None:
        """Write the stage's predictions of ``task`` and keep each example's score (0-1)."""
        if not self.is_main:
            return
        entry = self.example_scores.setdefault(task.info.name, {"ids": [ex.id for ex in task.test],
                                                                "after": {}})
        entry["after"][self.task_names[stage.column]] = [float(v) for v in scores]
        lines = [json.dumps({"id": ex.id, "input": ex.input, "output": ex.output, "prediction": p},
                            ensure_ascii=False) for ex, p in zip(task.test, preds)]
        name = f"{stage_dirname(stage)}__{task.info.name}.jsonl"
        atomic_write_text(self.run_dir / "predictions" / name, "\n".join(lines) + "\n")

    def save_adapter(self, net, stage, save, trained: list[tuple[int, ...]],
                     n_stages: int) -> None:
        """Save the stage's adapter folder atomically: ``save(net, folder)`` writes it into a
        temporary folder (:meth:`~aimmerging.methods.base.Method.save_adapter`: a PEFT folder),
        and its ``README.md`` says what it is and how to load it
        (:func:`aimmerging.model_card.stage_card`; ``trained``: the task indices that each stage
        up to this one, of ``n_stages``, trained the weights on)."""
        from .model_card import stage_card

        if not self.is_main:
            return
        dest = self.run_dir / "adapters" / stage_dirname(stage)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_folder(dest.parent, ".adapter.")
        try:
            save(net, tmp)
            atomic_write_text(tmp / "README.md", stage_card(
                tmp, dest.name, self.cfg.model.name, self.cfg.method.name,
                [[self.task_names[t] for t in ts] for ts in trained], n_stages))
            plain_permissions(tmp)
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
            if self.example_scores:
                atomic_write_text(self.run_dir / EXAMPLE_SCORES,
                                  example_scores_csv(self.example_scores, self.task_names))

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
        from .machine import machine

        out["machine"] = machine()       # where the run finished (its CPU decides its speed)
        return out

    def finish(self, method, timing: dict, counters: dict, summary: dict) -> dict:
        metrics = self.metrics(method, timing, counters, summary)
        if self.is_main:
            self.write_tables()
            atomic_write_json(self.run_dir / "metrics.json", metrics)
        return metrics

    def state_dict(self) -> dict:
        return {"matrix": self.matrix.to_json_dict(), "traces": self.traces.state_dict(),
                "example_scores": self.example_scores}

    def load_state_dict(self, state: dict) -> None:
        self.matrix = AccuracyMatrix.from_json_dict(state["matrix"])
        self.traces.load_state_dict(state["traces"])
        self.example_scores = dict(state.get("example_scores") or {})


#: the run file of per-example scores
EXAMPLE_SCORES = "example_scores.csv"


def example_scores_csv(scores: dict, task_names: list[str]) -> str:
    """``task,example,id,after_<task>...``: one row per evaluation example (``example`` is its
    position in the task's evaluation sample), its score in [0, 1] after each stage (empty
    where the task was not evaluated). Accuracy scores are 0 or 1; ROUGE-L keeps 4 digits."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["task", "example", "id"] + [f"after_{t}" for t in task_names])
    for task in task_names:
        entry = scores.get(task)
        if not entry:
            continue
        after = entry["after"]
        for i, ex_id in enumerate(entry["ids"]):
            cells = []
            for t in task_names:
                v = after.get(t)
                cells.append("" if v is None else (f"{v[i]:.4g}" if v[i] not in (0.0, 1.0) else str(int(v[i]))))
            w.writerow([task, i, ex_id, *cells])
    return buf.getvalue()


def read_example_scores(path, with_ids: bool = False):
    """:func:`example_scores_csv`'s file back: ``{task: {after_task: [score, ...]}}`` (floats,
    None where empty); with ``with_ids``, the pair (that dict, ``{task: [example id, ...]}``).
    Raises ValueError naming the file and line for a malformed row."""
    import csv

    path = Path(path)
    out: dict = {}
    ids: dict = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = [c for c in (reader.fieldnames or []) if c.startswith("after_")]
        for line, row in enumerate(reader, start=2):
            try:
                task = row["task"]
                cells = out.setdefault(task, {c[len("after_"):]: [] for c in columns})
                for c in columns:
                    v = None if row[c] in ("", None) else float(row[c])
                    if v is not None and not 0.0 <= v <= 1.0:
                        raise ValueError(f"{c} is {row[c]}, a score is between 0 and 1")
                    cells[c[len("after_"):]].append(v)
                ids.setdefault(task, []).append(row["id"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}, line {line}: {exc}") from None
    return (out, ids) if with_ids else out


def _mean(values) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None
