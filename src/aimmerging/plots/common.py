"""Shared helpers of the figures: colours, series from CSV rows, figure creation and
atomic PNG writing. matplotlib is imported only when a figure is created."""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path
from typing import Optional

from ..traces import as_float

__all__ = ["COLORS"]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = as_float(r.get(key))
        if v is not None and math.isfinite(v):
            xs.append(int(r["step"]))
            ys.append(v)
    return xs, ys


def _smooth(ys: list[float]) -> Optional[list[float]]:
    """A centred moving average when the series is long enough to be noisy, else None."""
    w = len(ys) // 30
    if w < 2:
        return None
    out = []
    for i in range(len(ys)):
        part = ys[max(0, i - w // 2): i + w // 2 + 1]
        out.append(sum(part) / len(part))
    return out


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _save(fig, path: Path) -> Path:
    """Write the PNG atomically (temporary file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _note(msg: str) -> None:
    print(f"plot: {msg}", file=sys.stderr)
