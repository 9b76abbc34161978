"""The figures of a run folder, one function per figure (after the paper's figures 6-13)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from ..traces import as_float
from .common import COLORS, _figure, _note, _save, _series, _smooth
from .load import RunData, load_run

__all__ = ["plot_signals", "plot_history_vs", "plot_first_task", "plot_matrix", "plot_intervals"]


# --- (a) the merge controller's signals, one figure per task ------------------------------------
def plot_signals(run: RunData, stage: int, task: str, path: Path) -> Optional[Path]:
    """Top: the training loss (left axis) and, on its own axis (right), the history loss with
    the forgetting threshold, its activations, the merges and the memory-batch redraws.
    Bottom: Lambda at merges and the merge interval S."""
    sig, merges = run.rows(stage), run.rows(stage, "merges")
    hx, hy = _series(sig, "history_loss")
    if not hx and not merges:
        return None
    fig = _figure(9.5, 8)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    tx, ty = _series(sig, "train_loss")
    handles = top.plot(tx, ty, color="0.65", lw=1, label="training loss (new-task batch, left axis)")
    top.set_ylabel("training loss (cross-entropy)")
    hist = top.twinx() if hx else top
    if hx:
        smooth = _smooth(hy)
        handles += hist.plot(hx, hy, color=COLORS[0], lw=1.6 if smooth is None else 0.8,
                             alpha=1 if smooth is None else 0.4,
                             label="history loss (replay-memory batch, right axis)")
        if smooth is not None:
            handles += hist.plot(hx, smooth, color=COLORS[0], lw=2, label="history loss, moving average")
        hist.set_ylabel("history loss (cross-entropy)", color=COLORS[0])
    thx, thy = _series(sig, "threshold")
    if thy:
        gaps = [as_float(r.get("threshold")) for r in sig]
        handles += hist.plot([int(r["step"]) for r in sig], [math.nan if v is None else v for v in gaps],
                             color=COLORS[1], ls="--", lw=1.2, drawstyle="steps-post",
                             label="forgetting threshold δ (right axis)")
        hmap, thr = dict(zip(hx, hy)), dict(zip(thx, thy))
        act = [(s, hmap[s]) for s in hx if s in thr and hmap[s] > thr[s]]
        if act:
            handles.append(hist.scatter(*zip(*act), marker="x", color=COLORS[1], zorder=4,
                                        label="forgetting activation (loss > δ)"))
    if hx:    # the right axis holds the history loss and the threshold, whatever their scale
        values = hy + thy
        lo, hi = min(values), max(values)
        pad = 0.08 * (hi - lo or abs(hi) or 1.0)
        hist.set_ylim(lo - pad, hi + pad)
    msteps = [int(m["step"]) for m in merges]
    for ax in (top, bottom):
        for s in msteps:
            ax.axvline(s, color="0.4", ls=":", lw=0.9)
    ref_ax, ref = (hist, dict(zip(hx, hy))) if hx else (top, dict(zip(tx, ty)))
    for fused, style in ((True, {"color": "k", "label": "merge (dotted line), alpha_past > 0"}),
                         (False, {"facecolors": "none", "edgecolors": "k",
                                  "label": "merge, alpha_past = 0 (no rehearsal fused)"})):
        pts = [(s, ref[s]) for s, m in zip(msteps, merges)
               if s in ref and ((as_float(m["alpha_past"]) or 0) > 0) == fused]
        if pts:
            handles.append(ref_ax.scatter(*zip(*pts), marker="v", s=60, zorder=5, **style))
    title = "Forgetting signal: loss on earlier tasks' memory"
    if hx and run.history_draw == "interval":
        # a new memory batch at the task's first step and after every merge: a jump there is
        # a redraw, not forgetting
        redraws = [hx[0]] + [s + 1 for s in msteps if s + 1 in ref]
        handles.append(hist.scatter(redraws, [hist.get_ylim()[0]] * len(redraws), marker="|",
                                    s=120, color=COLORS[0], zorder=5, clip_on=False,
                                    label="memory batch redrawn (a jump there is not forgetting)"))
    elif hx:
        title += " (a new memory batch every step)"
    top.set_title(title, fontsize=10)
    top.grid(alpha=0.3)
    lx, ly = _series(merges, "lambda")
    lines = []
    if lx:
        lines += bottom.plot(lx, ly, "o-", color=COLORS[2], lw=1.8, label="learning signal Λ at a merge")
    bottom.set_ylabel("Λ (L1 change per step)")
    bottom.set_xlabel("optimizer step within the task (steps)")
    bottom.grid(alpha=0.3)
    ix, iy = _series(sig, "interval")
    if iy:
        twin = bottom.twinx()
        lines += twin.plot(ix, iy, color=COLORS[3], lw=1.8, drawstyle="steps-post",
                           label="merge interval S (right axis; without an activation "
                                 "a merge waits until 2S)")
        twin.set_ylabel("merge interval S (steps)")
        twin.set_ylim(0, max(iy) * 1.25 + 1)
    handles += lines
    # one legend below both panels: inside, no placement keeps clear of two axes' curves
    fig.legend(handles, [h.get_label() for h in handles], fontsize=8, ncol=2,
               loc="outside lower center")
    bottom.set_title("Learning signal and merge interval", fontsize=10)
    count = f"{len(merges)} merge{'' if len(merges) == 1 else 's'}"
    fig.suptitle(f"{run.label}: task {stage} ({task}), {count}", fontweight="bold")
    return _save(fig, path)


# --- (b) history loss against a baseline run ------------------------------------------------------
def plot_history_vs(run: RunData, base: RunData, path: Path) -> Optional[Path]:
    if not base.has_history():
        _note(f"baseline {base.path} has no history loss in its signals.csv (runs log one when "
              f"the method uses it or with method.log_history_loss=true); skipping {path.name}")
        return None
    if not run.has_history():
        _note(f"{run.path} has no history loss; skipping {path.name}")
        return None
    base_stages = {t: s for s, t in base.stages()}
    panels = [(s, t) for s, t in run.stages() if s > 1 and t in base_stages]
    if not panels:
        _note(f"{run.path} and {base.path} share no task after the first; skipping {path.name}")
        return None
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig = _figure(max(4.6 * ncol + 0.5, 8.5), 3.4 * nrow + 0.6)   # room for the title
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    for ax, (stage, task) in zip(axes, panels):
        for r, rstage, color in ((base, base_stages[task], COLORS[1]), (run, stage, COLORS[0])):
            x, y = _series(r.rows(rstage), "history_loss")
            sm = _smooth(y)
            ax.plot(x, y, color=color, lw=1.5 if sm is None else 0.7, alpha=1 if sm is None else 0.35,
                    label=r.label if sm is None else None)
            if sm is not None:
                ax.plot(x, sm, color=color, lw=2, label=f"{r.label} (moving average)")
        for m in run.rows(stage, "merges"):
            ax.axvline(int(m["step"]), color=COLORS[0], ls=":", lw=0.7, alpha=0.6)
        ax.set_title(f"task {stage}: {task}", fontsize=10)
        ax.set_xlabel("optimizer step within the task (steps)")
        ax.set_ylabel("history loss (cross-entropy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"History loss (earlier tasks' memory) per task\n{run.label} vs {base.label}; "
                 f"dotted lines: {run.label}'s merges", fontweight="bold")
    return _save(fig, path)


# --- (c) first task's score across stages ----------------------------------------------------------
def plot_first_task(runs: list[RunData], path: Path) -> Path:
    main = runs[0]
    fig = _figure(8, 5)
    ax = fig.subplots()
    k = max(len(r.tasks) for r in runs)
    markers = "osD^vP*X"
    for n, r in enumerate(runs):
        row = r.matrix[0] if r.matrix else []
        shift = 0.05 * (n - (len(runs) - 1) / 2)        # overlapping lines stay visible
        pts = [(j + 1 + shift, v) for j, v in enumerate(row) if v is not None]
        if not pts:
            _note(f"{r.path}: no stage has finished; no line in {path.name}")
            continue
        label = r.label
        if r.tasks[:1] != main.tasks[:1]:
            _note(f"{r.path}: its first task is {r.tasks[0]}, not {main.tasks[0]}")
            label = f"{r.label} (its first task: {r.tasks[0]})"
        elif r.tasks != main.tasks:
            _note(f"{r.path}: its tasks ({', '.join(r.tasks)}) are not {main.path.name}'s "
                  f"({', '.join(main.tasks)}); its line follows its own stages")
        change = f", {pts[-1][1] - pts[0][1]:+.1f} points" if len(pts) > 1 else ""
        ax.plot(*zip(*pts), marker=markers[n % len(markers)], color=COLORS[n % len(COLORS)],
                lw=2.2 if n == 0 else 1.5, ms=7, label=f"{label}{change}")
    names = list(main.tasks) + [""] * (k - len(main.tasks))
    ax.set_xticks(range(1, k + 1), [f"{j + 1}\n{t}" for j, t in enumerate(names)],
                  fontsize=8 if k <= 8 else 6)
    ax.set_xlim(0.6, k + 0.9)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("after training task (stage)")
    ax.set_ylabel("score on task 1 (percent)")
    first = main.tasks[0] if main.tasks else "?"
    ax.set_title(f"Score of the first task ({first}) through the task sequence", fontweight="bold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, title="method, change from first to last stage", title_fontsize=8)
    return _save(fig, path)


# --- (d) accuracy matrix heat map -------------------------------------------------------------------
def plot_matrix(run: RunData, path: Path) -> Path:
    import numpy as np

    k = len(run.tasks)
    data = np.array([[np.nan if v is None else float(v) for v in row] for row in run.matrix],
                    dtype=float).reshape(k, k)
    fig = _figure(max(5.5, 1.6 + 0.75 * k), max(4.5, 1.4 + 0.6 * k))
    ax = fig.subplots()
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="0.92")
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=100, aspect="auto")
    size = 10 if k <= 6 else 8 if k <= 10 else 6
    for i in range(k):
        for j in range(k):
            v = data[i, j]
            if math.isnan(v):
                ax.text(j, i, "–", ha="center", va="center", color="0.55", fontsize=size)
            else:
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=size,
                        color="white" if v < 60 else "black")
    ax.set_xticks(range(k), [f"{j + 1}: {t}" for j, t in enumerate(run.tasks)], rotation=35,
                  ha="right", fontsize=size)
    ax.set_yticks(range(k), run.tasks, fontsize=size)
    ax.set_xlabel("after training on task (stage)")
    ax.set_ylabel("task evaluated")
    fig.colorbar(im, ax=ax, label="score (percent)")
    m = run.metrics
    summary = ", ".join(f"{n} {m[key]:.1f}" for n, key in (("OP", "op"), ("BWT", "bwt"), ("FWT", "fwt"))
                        if m.get(key) is not None)
    ax.set_title(f"Accuracy matrix a[i][j]: {run.label}" + (f"\n{summary}" if summary else ""),
                 fontweight="bold")
    return _save(fig, path)


# --- (e) merge interval over all tasks ---------------------------------------------------------------
def plot_intervals(run_dir, path) -> Path:
    """The merge interval S over the optimizer steps of all tasks, in one figure."""
    run = run_dir if isinstance(run_dir, RunData) else load_run(run_dir, need=("signals.csv",))
    fig = _figure(10, 4.2)
    ax = fig.subplots()
    offset, any_interval, top = 0, False, 1.0
    for n, (stage, task) in enumerate(run.stages()):
        sig = run.rows(stage)
        last = max(int(r["step"]) for r in sig)
        x, y = _series(sig, "interval")
        if y:
            top = max(top, max(y))
            ax.plot([offset + s for s in x], y, color=COLORS[3], lw=2, drawstyle="steps-post",
                    label=None if any_interval else "merge interval S")
            any_interval = True
            ymap = dict(zip(x, y))
            pts = [(offset + int(m["step"]), ymap.get(int(m["step"]))) for m in run.rows(stage, "merges")]
            pts = [p for p in pts if p[1] is not None]
            if pts:
                ax.scatter(*zip(*pts), s=18, color="k", zorder=4,
                           label=None if ax.collections else "merge")
        if n:
            ax.axvline(offset + 0.5, color="0.5", ls="--", lw=1)
        ax.text(offset + 1, 1.0, f" {stage}: {task}", transform=ax.get_xaxis_transform(),
                va="top", fontsize=8, color="0.3")
        offset += last
    if not any_interval:
        ax.text(0.5, 0.5, f"no merge interval: method {run.method} does not merge",
                transform=ax.transAxes, ha="center", va="center", fontsize=12, color="0.4")
    else:
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_ylim(0, top * 1.2 + 0.5)      # room for the task names at the top
    ax.set_xlim(0, max(offset, 1) + 0.5)
    ax.set_xlabel("optimizer step, all tasks in order (steps; dashed: task boundary)")
    ax.set_ylabel("merge interval S (steps)")
    ax.set_title(f"Merge interval chosen by the controller: {run.label}", fontweight="bold")
    ax.grid(alpha=0.3)
    return _save(fig, Path(path))
