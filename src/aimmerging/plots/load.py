"""Reading a run folder into a :class:`RunData` (what the figures need)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..compare_report import read_json
from ..errors import ConfigError
from ..traces import as_float, read_csv_rows

__all__ = ["RunData", "load_run"]


@dataclass
class RunData:
    """What the figures need from a run folder."""

    path: Path
    method: str
    tasks: list = field(default_factory=list)
    matrix: list = field(default_factory=list)          # K x K, None for missing cells
    signals: list = field(default_factory=list)         # signals.csv rows
    merges: list = field(default_factory=list)          # merge_trace.csv rows
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)          # config.yaml ({} when absent)
    label: str = ""

    @property
    def history_draw(self) -> str:
        """``method.history_draw`` of the run (``step`` for runs saved before the setting)."""
        return ((self.config.get("method") or {}).get("history_draw")) or "step"

    def stages(self) -> list[tuple[int, str]]:
        """(stage number, task name) of every stage in the signals, in order."""
        seen: dict[int, str] = {}
        for r in self.signals:
            seen.setdefault(int(r["stage"]), r["task"])
        return sorted(seen.items())

    def rows(self, stage: int, which: str = "signals") -> list[dict]:
        return [r for r in getattr(self, which) if int(r["stage"]) == stage]

    def has_history(self) -> bool:
        return any(as_float(r.get("history_loss")) is not None for r in self.signals)


def _require(run_dir: Path, name: str) -> Path:
    p = run_dir / name
    if not p.is_file():
        raise ConfigError(f"{run_dir}: missing {name} (not a run folder, or the run has not "
                          f"written it yet)")
    return p


def load_run(run_dir, need: Sequence[str] = ("accuracy_matrix.json", "signals.csv",
                                              "merge_trace.csv")) -> RunData:
    """Read a run folder; ConfigError naming the first missing file of ``need``."""
    d = Path(run_dir)
    if not d.is_dir():
        raise ConfigError(f"{d}: not a run folder (no such folder)")
    for name in need:
        _require(d, name)
    metrics_path = d / "metrics.json"
    metrics = read_json(metrics_path, check_fields=False) if metrics_path.is_file() else {}
    config: dict = {}
    if (d / "config.yaml").is_file():
        import yaml

        try:
            loaded = yaml.safe_load((d / "config.yaml").read_text(encoding="utf-8"))
            config = loaded if isinstance(loaded, dict) else {}
        except (yaml.YAMLError, UnicodeDecodeError):
            config = {}
    method = metrics.get("method") or (config.get("method") or {}).get("name")
    run = RunData(d, method or d.name, metrics=metrics, config=config,
                  signals=read_csv_rows(d / "signals.csv"), merges=read_csv_rows(d / "merge_trace.csv"))
    if (d / "accuracy_matrix.json").is_file():
        data = read_json(d / "accuracy_matrix.json")
        run.tasks, run.matrix = list(data.get("tasks") or []), list(data.get("matrix") or [])
    run.label = run.method
    return run


def _label_runs(runs: list[RunData]) -> None:
    """Method names as labels, with the folder name where two runs share a method."""
    names = [r.method for r in runs]
    for r in runs:
        r.label = f"{r.method} ({r.path.name})" if names.count(r.method) > 1 else r.method
