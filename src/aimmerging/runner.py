"""From a config to a finished run folder: input checks, data loading, logging, the loop.

Everything that can be checked before training is checked here (config values,
task names, the data folder, the output folder), so that a mistake costs no compute.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Optional

from .config import RunConfig
from .errors import ConfigError

log = logging.getLogger("aimmerging")


def task_order(cfg: RunConfig) -> list[str]:
    """The task names of the run: ``data.tasks``, else paper order ``data.order``, else the demo."""
    from .data.demo import DEMO_TASKS
    from .data.registry import resolve_order

    if cfg.data.tasks:
        return resolve_order(cfg.data.tasks)
    if cfg.data.order is not None:
        return resolve_order(cfg.data.order)
    if cfg.data.dir is None:
        return list(DEMO_TASKS)
    raise ConfigError("data: give data.tasks or data.order for the tasks of data.dir")


def load_tasks(cfg: RunConfig) -> list:
    """Load (and subsample) every task of the run; raises DataError/ConfigError naming the problem."""
    from .data.demo import demo_stream
    from .data.formats import list_tasks
    from .data.registry import canonical_task_name, get_task_info
    from .data.sampling import load_task_data

    names = task_order(cfg)
    if cfg.data.dir is None:
        stream = {t.info.name: t for t in demo_stream(cfg.data.n_train or 96, cfg.data.n_test or 40,
                                                       cfg.seed)}
        unknown = [n for n in names if n not in stream]
        if unknown:
            raise ConfigError(f"data.tasks: {', '.join(unknown)} not in the demo stream "
                              f"(set data.dir for benchmark data)")
        return [stream[n] for n in names]
    data_dir = Path(cfg.data.dir)
    if not data_dir.is_dir():
        raise ConfigError(f"data.dir: {data_dir} is not a folder")
    available = list_tasks(data_dir)
    tasks = []
    for name in names:
        canon = canonical_task_name(name)
        if canon not in available:
            get_task_info(name)   # an unknown name raises here, listing the known ones
            raise ConfigError(f"data.dir: {data_dir} has no files for task {name!r}")
        default = None
        try:
            get_task_info(name)
        except ConfigError:
            default = "accuracy"    # a user's own task, present in the folder
        tasks.append(load_task_data(data_dir, name, cfg.data.n_train, cfg.data.n_test, cfg.seed,
                                    cfg.data.test_split, default_metric=default))
    return tasks


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write over an existing run unless ``resume`` or ``overwrite``."""
    holds_run = run_dir.is_dir() and any((run_dir / f).exists() for f in
                                         ("config.yaml", "checkpoint", "metrics.json"))
    if holds_run and not (resume or overwrite):
        raise ConfigError(f"{run_dir} already holds a run: pass --resume to continue it "
                          f"or --overwrite to start again")
    if resume and not holds_run:
        log.info("nothing to resume in %s: starting a new run", run_dir)
    if overwrite and holds_run and not resume:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def setup_logging(run_dir: Optional[Path], verbose: bool = True) -> None:
    """Log to ``RUN_DIR/run.log`` and to stderr (INFO)."""
    logger = logging.getLogger("aimmerging")
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if verbose:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        logger.addHandler(sh)
    if run_dir is not None:
        fh = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    logger.propagate = False


def quiet_libraries() -> None:
    """Silence the progress bars and notices of transformers/peft loading (ours stay)."""
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")


def run(cfg: RunConfig, run_dir: Path, resume: bool = False, overwrite: bool = False,
        progress: bool = True, accelerator=None) -> dict:
    """Check inputs, load the tasks and train; returns metrics.json's content.

    Raises ConfigError / DataError (before any training) and TrainingError.
    """
    from .loop import ContinualTrainer

    run_dir = Path(run_dir)
    tasks = load_tasks(cfg)              # data errors before touching the run folder
    is_main = accelerator is None or accelerator.is_main_process
    if is_main:
        prepare_run_dir(run_dir, resume, overwrite)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    setup_logging(run_dir if is_main else None, verbose=progress and is_main)
    quiet_libraries()
    log.info("run %s: method %s, %d tasks (%s), model %s", run_dir, cfg.method.name, len(tasks),
             ", ".join(t.info.name for t in tasks), cfg.model.name)
    trainer = ContinualTrainer(cfg, run_dir, tasks, accelerator=accelerator, progress=progress)
    metrics = trainer.run(resume=resume)
    log.info("done: OP %s, BWT %s, FWT %s", _fmt(metrics.get("op")), _fmt(metrics.get("bwt")),
             _fmt(metrics.get("fwt")))
    return metrics


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"
