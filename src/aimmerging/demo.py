"""``aimmerging demo``: AIMMerging on a built-in four-task stream, for a fresh machine.

No data and no GPU needed: the tasks come from :mod:`aimmerging.data.demo`, the model
is SmolLM2-135M-Instruct (installed from PyPI and converted on first use). Prints the
per-task scores after each stage, OP, BWT and the merges per task, and writes a
figure of the merge intervals.
"""

from __future__ import annotations

from pathlib import Path

from .config import build_config
from .traces import read_csv_rows

DEMO_CONFIG = {
    "seed": 0,
    "data": {"dir": None, "n_train": 96, "n_test": 24, "max_input_tokens": 64,
             "max_target_tokens": 4},
    "model": {"name": "smollm2-135m"},
    # a short stream: S_init=4 (paper: 8) so that every task sees several merges
    "method": {"name": "aimmerging", "memory_size": 8, "s_init": 4},
    "train": {"epochs": 2, "batch_size": 8, "lr": 1.0e-3},
    "eval": {"batch_size": 24, "max_new_tokens": 3},
}


def format_report(metrics: dict, merges_per_task: dict[str, int]) -> str:
    """The demo's table: a[i][j] (percent), then OP, BWT and merges per task."""
    tasks = metrics["tasks"]
    rows = metrics["accuracy_matrix"]
    width = max(len(t) for t in tasks) + 2
    head = "task".ljust(width) + "".join(f"after {j + 1}".rjust(9) for j in range(len(tasks)))
    head += "merges".rjust(8)
    lines = ["Accuracy (%) of each task after each stage:", head]
    for i, t in enumerate(tasks):
        cells = "".join(("-" if v is None else f"{v:.1f}").rjust(9) for v in rows[i])
        lines.append(t.ljust(width) + cells + str(merges_per_task.get(t, 0)).rjust(8))
    lines.append(f"OP {metrics['op']:.1f}   BWT {metrics['bwt']:.1f}   merges {metrics['merges']} "
                 f"({metrics['effective_merges']} with alpha_past > 0)")
    return "\n".join(lines)


def _check_demo_folder(output: Path, raw: dict) -> None:
    """Refuse to replace a run in ``output`` that is not a demo run (any backbone): one whose
    config differs from the demo's in a setting the demo sets. Settings the demo leaves at the
    package's defaults may differ (a demo run of an earlier version, whose defaults were
    others, is still a demo run). Raises ConfigError; reads only."""
    from .errors import ConfigError
    from .rundir import config_differences, holds_run, saved_config

    if not holds_run(output):
        return
    try:
        old = saved_config(output)
    except ConfigError:
        old = None
    if isinstance(old, dict) and isinstance(old.get("model"), dict):
        same_model = {**raw, "model": {"name": old["model"].get("name", raw["model"]["name"])}}
        diffs = config_differences(old, build_config(same_model, "demo"))
        if not [key for key, _, _ in diffs if _sets(same_model, key)]:
            return
    raise ConfigError(f"--output: {output} holds a run that is not a demo run; the demo replaces "
                      f"only its own: choose another --output")


def _sets(raw: dict, dotted: str) -> bool:
    """Whether the config dict ``raw`` sets the dotted key ``dotted`` (or a section above it)."""
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def run_demo(output: Path, overwrite: bool = True, model: str = "smollm2-135m") -> int:
    """Train the demo stream, print the report, write ``figures/intervals.png``; returns 0."""
    from .plots import plot_intervals
    from .runner import run

    raw = dict(DEMO_CONFIG)
    raw["model"] = {"name": model}
    cfg = build_config(raw, "demo")
    if overwrite:
        _check_demo_folder(Path(output), raw)
    metrics = run(cfg, output, overwrite=overwrite)
    merges: dict[str, int] = {}
    for row in read_csv_rows(output / "merge_trace.csv"):
        merges[row["task"]] = merges.get(row["task"], 0) + 1
    print()
    print(format_report(metrics, merges))
    fig = plot_intervals(output, output / "figures" / "intervals.png")
    print(f"merge intervals: {fig}")
    print(f"run folder: {output}")
    return 0
