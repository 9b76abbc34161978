"""The figure of a comparison over seeds (``comparison.png`` beside ``comparison.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..stats import CLAIM_SEEDS, verdict
from .common import COLORS, _figure, _save

__all__ = ["plot_comparison"]


def plot_comparison(summary: dict, path) -> Optional[Path]:
    """OP and BWT per method (top: each seed's value as a dot, the mean as a bar), and each
    method's difference from the reference with its 95% interval (bottom; filled marker:
    a claim, the interval excludes 0 over at least :data:`~aimmerging.stats.CLAIM_SEEDS`
    paired seeds, :func:`~aimmerging.stats.verdict`). ``summary``: :func:`aimmerging.multiseed_report.summarize`'s
    result. Returns the written PNG, or None when no method has a finished run."""
    rows = [r for r in summary["rows"] if r.get("seeds")]
    if not rows:
        return None
    ref = summary.get("reference")
    names = [r["method"] for r in rows]
    fig = _figure(max(10.0, 1.6 * len(rows) + 4.0), 7.5)
    axes = fig.subplots(2, 2, sharex=True)
    x = list(range(len(rows)))
    for col, metric in enumerate(("OP", "BWT")):
        top, bottom = axes[0][col], axes[1][col]
        for i, r in enumerate(rows):
            mean = r.get(f"{metric}_mean")
            if mean is not None:
                top.bar(i, mean, width=0.6, color=COLORS[i % len(COLORS)], alpha=0.35)
            vals = [run[metric] for run in summary["runs"] if run["method"] == r["method"]
                    and run.get(metric) is not None]
            if vals:
                top.scatter([i] * len(vals), vals, s=22, color=COLORS[i % len(COLORS)], zorder=3,
                            label="one seed" if i == 0 else None)
            d = r.get(f"{metric}_diff")
            if d is not None:
                low, high = r[f"{metric}_diff_low"], r[f"{metric}_diff_high"]
                filled = verdict(r, metric) in ("above", "below")
                bottom.errorbar([i], [d], yerr=[[d - low], [high - d]], fmt="o", capsize=5,
                                color=COLORS[i % len(COLORS)],
                                mfc=COLORS[i % len(COLORS)] if filled else "white")
            elif r["method"] == ref:
                bottom.text(i, 0, "reference", ha="center", va="bottom", fontsize=8, color="0.35")
        top.axhline(0, color="0.5", lw=0.8)
        bottom.axhline(0, color="0.3", lw=1, ls="--")
        top.set_ylabel(f"{metric} (points)")
        top.set_title(f"{metric}: mean over seeds (bar), each seed (dot)", fontsize=9)
        bottom.set_ylabel(f"{metric} − {ref} (points)")
        bottom.set_title(f"{metric} − {ref}, 95% interval (filled: excludes 0 over "
                         f"{CLAIM_SEEDS}+ seeds)", fontsize=9)
        for ax in (top, bottom):
            ax.grid(alpha=0.3, axis="y")
            ax.use_sticky_edges = False          # room above and below the bars' ends
            ax.margins(y=0.08)
        bottom.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    boot = summary.get("bootstrap") or {}
    partial = "; runs missing, see comparison.md" if summary.get("missing") else ""
    fig.suptitle(f"Comparison over seeds {', '.join(map(str, summary.get('seeds') or []))} "
                 f"(paired bootstrap, {boot.get('draws')} draws{partial})", fontweight="bold")
    return _save(fig, Path(path))
