"""The Python entry points of the command line: :func:`run` (``aimmerging run``) and
:func:`compare` (``aimmerging compare``), exported as ``aimmerging.run`` and ``aimmerging.compare``.

Errors are the project's typed exceptions (:mod:`aimmerging.errors`): ConfigError and
DataError before any training, TrainingError during it; never SystemExit.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Sequence, Union

from .config import RunConfig, apply_overrides, build_config, load_raw
from .errors import ConfigError

__all__ = ["run", "compare", "override_items"]

Overrides = Union[Mapping, Sequence[str], str, None]


def override_items(overrides: Overrides) -> list[str]:
    """``--set`` items (``"train.epochs=1"``) from a list of them, one of them, or a mapping of
    dotted keys to values (``{"train.epochs": 1}``; values written as JSON, which YAML reads)."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        items = []
        for key, value in overrides.items():
            try:
                items.append(f"{key}={json.dumps(value)}")
            except TypeError:
                raise ConfigError(f"overrides: {key}: {value!r} is not a plain value "
                                  f"(number, string, boolean, list or None)") from None
        return items
    return [str(item) for item in overrides]


def resolve_config(config: Union[str, Path, Mapping, RunConfig],
                   overrides: Overrides = None, data: Optional[str] = None) -> tuple[RunConfig, str]:
    """A validated RunConfig from a YAML path, a dict of sections or a RunConfig, with
    ``data`` (``--data DIR``; else ``$AIMMERGING_DATA`` for a relative ``data.dir``, as the
    command line does) and ``overrides`` applied; and a name for its default run folder (the
    YAML file's stem). Raises ConfigError (one line naming the file or the override and the key)."""
    from .data.location import locate_data

    items = override_items(overrides)
    if isinstance(config, RunConfig):
        raw, source, stem = config.model_dump(mode="json"), "", "run"
    elif isinstance(config, Mapping):
        raw, source, stem = copy.deepcopy(dict(config)), "", "run"
    elif isinstance(config, (str, Path)):
        raw, source, stem = load_raw(config), str(config), Path(config).stem
    else:
        raise ConfigError(f"config: expected a YAML path, a dict or a RunConfig, not "
                          f"{type(config).__name__}")
    raw = locate_data(raw, items, data)
    return build_config(apply_overrides(raw, items), source, items), stem


def run(config: Union[str, Path, Mapping, RunConfig], overrides: Overrides = None,
        output: Union[str, Path, None] = None, resume: bool = False, overwrite: bool = False,
        progress: bool = True, data: Optional[str] = None, threads: Optional[int] = None) -> dict:
    """Train through a task order with one method, as ``aimmerging run`` does; returns the
    run's metrics (the content of ``OUTPUT/metrics.json``: ``op``, ``bwt``, ``fwt``,
    ``accuracy_matrix``, ``merges``, ``counters``, ``timing_seconds`` ...).

    Args:
        config: a YAML file, a dict of config sections or a :class:`~aimmerging.config.RunConfig`.
        overrides: ``--set`` items (``["train.epochs=1"]``) or ``{"train.epochs": 1}``.
        output: the run folder (default ``runs/<config file stem>_<method>``, ``runs/run_<method>``
            for a dict or RunConfig).
        resume: continue the run folder from its checkpoint (``--resume``).
        overwrite: replace a run already in the folder (``--overwrite``).
        progress: progress bars and the log on the terminal (the log always goes to ``run.log``;
            without them the log's warnings still reach stderr).
        data: the benchmark data folder (``--data DIR``: ``DIR/data_longsequence`` when the
            config's ``data.dir`` ends so and that folder exists, else ``DIR``).
        threads: torch's CPU threads for this run (``--threads N``; restored afterwards).
            None keeps torch's own (one per core); 1 runs faster on cores that other jobs
            share (docs/performance.md).

    Under ``torchrun --nproc_per_node N`` every process calls it, as with the command line.

    Raises:
        ConfigError, DataError: before any training (bad config, data or output folder).
        TrainingError: training cannot go on (a NaN loss ...); the last checkpoint is kept.
    """
    from .cli import _accelerator_for
    from .runner import run as run_folder

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ConfigError(f"run: threads must be a whole number >= 1, got {threads!r}")
    cfg, stem = resolve_config(config, overrides, data)
    out = Path(output) if output is not None else Path("runs") / f"{stem}_{cfg.method.name}"
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return run_folder(cfg, out, resume=resume, overwrite=overwrite, progress=progress,
                          accelerator=_accelerator_for(cfg, out))
    finally:
        torch.set_num_threads(before)


def compare(config: Union[str, Path], methods, *, output: Union[str, Path, None] = None,
            overrides: Overrides = None, seeds=None, **kwargs):
    """Run several methods on one YAML config into ``output/<method>/`` and tabulate them, as
    ``aimmerging compare`` does; returns the table's rows (one dict per method: ``op``,
    ``bwt``, ``fwt``, ``merges`` ...). ``methods``: a list or a comma-separated string;
    ``overrides`` as for :func:`run`; other keyword arguments go to
    :func:`aimmerging.compare.compare_runs` (``fwt=False``: no single_task run, so no FWT;
    ``progress``). With ``seeds`` (a list or ``"42,43,44"``), every method runs once per seed
    into ``output/<method>/seed<S>/`` as ``aimmerging compare --seeds`` does, the keyword
    arguments go to :func:`aimmerging.multiseed.compare_seeds` (``reference``, ``draws``,
    ``fwt``, ``progress``, ``data``), and the summary dict of the multi-seed tables is
    returned (docs/comparing.md). Raises ConfigError, DataError and TrainingError as
    :func:`run` does."""
    if seeds is not None:
        from .multiseed import compare_seeds

        return compare_seeds(config, methods, seeds, overrides=override_items(overrides),
                             output=output, **kwargs)
    from .compare import compare_runs

    return compare_runs(config, methods, overrides=override_items(overrides), output=output, **kwargs)
