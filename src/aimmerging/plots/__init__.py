"""Figures of a run folder (PNG, matplotlib's Agg renderer), after the paper's figures 6-13.

::

    aimmerging plot RUN_DIR [--baseline RUN_DIR] [--runs DIR1,DIR2,...]

writes to ``RUN_DIR/figures/``:

- ``signals_taskNN_<task>.png`` (tasks 2..K): the history loss per step with the
  forgetting threshold and the merges marked, above the learning signal Lambda at each
  merge with the merge interval S (step plot, right axis) -- figures 7 and 9-11;
- ``history_loss_vs_baseline.png`` (with ``--baseline``): this run's history loss
  against the baseline's, one panel per task -- figures 8, 12, 13;
- ``first_task.png``: the first task's score after each stage, for this run and the
  ``--baseline``/``--runs`` runs -- figure 6;
- ``accuracy_matrix.png``: a heat map of a[i][j] with the scores written in the cells;
- ``intervals.png``: the merge interval over the steps of all tasks.

:mod:`.comparison` draws a comparison over seeds (``comparison.png``, written by
``aimmerging compare --seeds`` / ``--from``).

matplotlib is imported only when a figure is drawn (the CLI imports this package at start).

Layout: :mod:`.load` reads run folders (``load_run``, ``RunData``); :mod:`.common`
holds the colours and the figure/series helpers; :mod:`.figures` draws the figures;
:mod:`.command` writes them all (``plot_run``) and adds the ``plot`` subcommand
(``add_parser``).
"""

from __future__ import annotations

# re-exported: aimmerging.plots.<name> keeps working for every public name of the old module
from .command import add_parser, cmd_plot, plot_run  # noqa: F401
from .common import COLORS  # noqa: F401
from .comparison import plot_comparison  # noqa: F401
from .figures import (  # noqa: F401
    plot_first_task,
    plot_history_vs,
    plot_intervals,
    plot_matrix,
    plot_signals,
)
from .load import RunData, load_run  # noqa: F401

__all__ = ["plot_run", "plot_intervals", "load_run", "add_parser"]
