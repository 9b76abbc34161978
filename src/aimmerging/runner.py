"""From a config to a finished run folder: input checks, data loading, logging, the loop.

Everything that can be checked before training is checked here (config values,
task names, the data folder, the output folder), so that a mistake costs no compute.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

from .config import RunConfig
from .errors import AimmergingError, ConfigError, DataError
from .rundir import check_run_dir, holds_run, prepare_run_dir

log = logging.getLogger("aimmerging")


def task_entries(cfg: RunConfig) -> list:
    """The tasks of the run in order: canonical names (``data.tasks``' names, else paper order
    ``data.order``, else the demo's) and :class:`~aimmerging.data.spec.TaskSpec` s (tasks given
    by their files; a task listed twice is refused when the config is built). Raises
    ConfigError for an unknown order."""
    from .data.demo import DEMO_TASKS
    from .data.registry import resolve_order

    if cfg.data.order is not None:
        order = resolve_order(cfg.data.order)     # an unknown order is an error even when unused
    if cfg.data.tasks:
        if cfg.data.order is not None:
            log.warning("data.tasks and data.order are both set: data.tasks is used, "
                        "data.order %s is ignored", cfg.data.order)
        names = [t for t in cfg.data.tasks if isinstance(t, str)]
        canonical = iter(resolve_order(names) if names else [])
        return [next(canonical) if isinstance(t, str) else t for t in cfg.data.tasks]
    if cfg.data.order is not None:
        return order
    if cfg.data.dir is None:
        return list(DEMO_TASKS)
    raise ConfigError("data: give data.tasks or data.order for the tasks of data.dir")


def task_order(cfg: RunConfig) -> list[str]:
    """The task names of the run, in order (:func:`task_entries`)."""
    return [t if isinstance(t, str) else t.name for t in task_entries(cfg)]


def data_folder(cfg: RunConfig, entries: Optional[list] = None) -> Optional[Path]:
    """``data.dir`` when a task of the run is read from it (a name, with ``data.dir`` set), else
    None; ``entries`` are the run's :func:`task_entries` when known. Raises ConfigError, saying
    how to give the data, when it is not a folder."""
    from .data.location import missing_data_message

    entries = task_entries(cfg) if entries is None else entries
    if cfg.data.dir is None or not any(isinstance(t, str) for t in entries):
        return None
    path = Path(cfg.data.dir).expanduser()
    if not path.is_dir():
        raise ConfigError(missing_data_message(cfg.data.dir))
    return path


def load_tasks(cfg: RunConfig) -> list:
    """Load (and subsample) every task of the run; raises DataError/ConfigError naming the problem.

    Each task's ``test`` holds its ``eval.split`` examples (``TaskData.split``, docs/data.md)."""
    from .data.custom import load_custom_task
    from .data.demo import demo_stream
    from .data.formats import list_tasks
    from .data.registry import canonical_task_name, get_task_info
    from .data.sampling import load_task_data
    from .data.sources import source_label

    entries = task_entries(cfg)
    names = [e for e in entries if isinstance(e, str)]
    data_dir = data_folder(cfg, entries)
    loaded: dict = {}
    if names and data_dir is None:
        if cfg.eval.split == "dev":
            raise ConfigError("eval.split: dev: the demo stream (data.dir: null) has no dev split")
        stream = {t.info.name: t for t in demo_stream(cfg.data.n_train or 96, cfg.data.n_test or 40,
                                                       cfg.seed)}
        unknown = [n for n in names if n not in stream]
        if unknown:
            raise ConfigError(f"data.tasks: {', '.join(unknown)} not in the demo stream "
                              f"(set data.dir, or pass --data DIR, for benchmark data)")
        loaded = {n: stream[n] for n in names}
    elif names:
        available = list_tasks(data_dir)
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
            loaded[name] = load_task_data(data_dir, name, cfg.data.n_train, cfg.data.n_test,
                                          cfg.seed, cfg.eval.split, default_metric=default)
            check_text(loaded[name], data_dir)
    tasks = []
    for entry in entries:
        if isinstance(entry, str):
            tasks.append(loaded[entry])
            continue
        task = load_custom_task(entry, cfg.data.n_train, cfg.data.n_test, cfg.seed, cfg.eval.split)
        check_text(task, source_label(entry.train))
        tasks.append(task)
    return tasks


def sample_size_notes(cfg: RunConfig, tasks: list) -> list[str]:
    """One line per task split with fewer examples than ``data.n_train`` / ``data.n_test`` ask
    for (dev records held out from the train file included)."""
    notes = []
    for task in tasks:
        name = task.info.name
        asked, have = cfg.data.n_train, len(task.train)
        if asked is not None and have < asked:
            notes.append(f"{name}: {asked} train examples asked for, the train split has {have}: "
                         f"all are used")
        split, source = getattr(task, "split", "test"), getattr(task, "source", "test file")
        asked, have = cfg.data.n_test, len(task.test)
        if asked is None or have >= asked:
            continue
        if source == "held out from the train file":
            notes.append(f"{name}: {asked} dev examples asked for, only {have} records of the "
                         f"train file are left outside the training sample (and the test file): "
                         f"all are used")
        elif source == "dev file":
            notes.append(f"{name}: {asked} dev examples asked for, the dev file has {have}: "
                         f"all are used")
        else:
            notes.append(f"{name}: {asked} {split} examples asked for, the {split} split has "
                         f"{have}: all are used")
    return notes


def check_text(task, data_dir) -> None:
    """Every text must be encodable (JSON admits lone surrogates such as ``"\\ud800"``, which
    the tokenizer rejects with a TypeError in the middle of training)."""
    for split, examples in (("train", task.train), ("evaluation", task.test)):
        for ex in examples:
            for field in ("input", "output"):
                try:
                    getattr(ex, field).encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise DataError(f"{data_dir}: task {task.info.name}, {split} record "
                                    f"{ex.id!r}: field {field!r} is not valid Unicode text "
                                    f"({exc.reason} at position {exc.start})") from None


def check_tracker(name: Optional[str]) -> None:
    """Fail before the run folder is touched when ``train.report_to`` names a tracker that
    Accelerate does not know or whose package is not installed (Accelerate would only warn
    and train without it)."""
    if not name:
        return
    import accelerate.utils as acc_utils
    from accelerate.utils import LoggerType

    known = [t.value for t in LoggerType]
    if name not in known:
        raise ConfigError(f"train.report_to: {name!r} is not an Accelerate tracker; known: "
                          f"{', '.join(known)}")
    if name == "all":
        if not any(getattr(acc_utils, f"is_{k}_available", lambda: False)() for k in known):
            raise ConfigError("train.report_to: all: no tracker is installed here "
                              '(pip install -e ".[tensorboard]")')
        return
    available = getattr(acc_utils, f"is_{name}_available", None)
    if available is not None and not available():
        extra = ' (pip install -e ".[tensorboard]")' if name == "tensorboard" else f" (pip install {name})"
        raise ConfigError(f"train.report_to: {name} is not installed here{extra}")


def check_model(name: str) -> None:
    """Fail before the run folder is touched when the backbone cannot be found."""
    from .models import BUILTIN_MODELS, resolve_model_path

    if name in BUILTIN_MODELS:
        return
    path = resolve_model_path(name)        # a local folder without config.json raises here
    if Path(path).is_dir():
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(path, "config.json"), str):
            return
    except Exception:   # noqa: BLE001 - an odd name; the download attempt below decides
        pass
    import huggingface_hub.utils as hub_utils
    from transformers import AutoConfig

    hub_utils.logging.set_verbosity_error()
    try:
        AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        hint = "" if "/" in name else (f" (not a built-in name: {', '.join(BUILTIN_MODELS)}; "
                                       f"nor a local folder)")
        raise ConfigError(f"model.name: cannot load {name!r}{hint}: {first}") from None


def setup_logging(run_dir: Optional[Path], verbose: bool = True,
                  warnings_to_stderr: bool = False) -> None:
    """Log to ``RUN_DIR/run.log`` and to stderr: every line (INFO) when ``verbose``, else
    the warnings alone, as bare messages, when ``warnings_to_stderr`` (``--quiet``)."""
    logger = logging.getLogger("aimmerging")
    logger.setLevel(logging.INFO)
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if verbose or warnings_to_stderr:
        sh = logging.StreamHandler(sys.stderr)
        if verbose:
            sh.setFormatter(fmt)
        else:
            sh.setLevel(logging.WARNING)
            sh.setFormatter(logging.Formatter("%(message)s"))
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


def interrupted_message(run_dir: Path, resume_command: Optional[str] = None) -> str:
    """What an interrupted run says: its last checkpoint (stage and step) and the exact command
    that resumes it (``resume_command``, else one from the run folder's own config.yaml)."""
    import shlex

    from . import checkpoint as ckpt

    found = ckpt.find_checkpoint(run_dir)
    if found is None:
        return f"interrupted: {run_dir} holds no checkpoint yet; run the same command again to start over"
    where = ""
    try:
        pos = ckpt.read_state(found).get("position") or {}
        where = f" (stage {int(pos['stage']) + 1}, {int(pos['step'])} steps done)"
    except (AimmergingError, KeyError, TypeError, ValueError):
        pass
    command = resume_command or shlex.join(["aimmerging", "run", str(run_dir / "config.yaml"),
                                            "--output", str(run_dir), "--resume"])
    return f"interrupted: the last checkpoint is {found}{where}; resume with: {command}"


def run(cfg: RunConfig, run_dir: Path, resume: bool = False, overwrite: bool = False,
        progress: bool = True, accelerator=None, resume_command: Optional[str] = None) -> dict:
    """Check inputs, load the tasks and train; returns metrics.json's content.

    ``resume_command`` is the command that an interruption (Ctrl-C) names for resuming the run
    (default: one from the run folder's config.yaml); the interruption is logged to run.log
    and re-raised as a KeyboardInterrupt carrying that message.

    ``progress``: progress bars and the log on stderr; without them, the log's warnings alone.

    Raises ConfigError / DataError (before any training) and TrainingError.
    """
    run_dir = Path(run_dir)
    # every check before touching the run folder (on every rank: they all stop alike)
    check_run_dir(run_dir, cfg, resume, overwrite, 1 if accelerator is None else accelerator.num_processes)
    check_tracker(cfg.train.report_to)
    tasks = load_tasks(cfg)
    check_model(cfg.model.name)
    is_main = accelerator is None or accelerator.is_main_process
    from . import checkpoint as ckpt

    fresh = resume and ckpt.find_checkpoint(run_dir) is None
    was_run = holds_run(run_dir)
    if is_main:
        prepare_run_dir(run_dir, resume, overwrite)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    setup_logging(run_dir if is_main else None, verbose=progress and is_main,
                  warnings_to_stderr=is_main)
    quiet_libraries()
    for note in sample_size_notes(cfg, tasks):     # after every check: an error is the only line
        log.warning("%s", note)
    if fresh:
        log.warning("--resume: %s: starting a new run", f"no checkpoint in {run_dir} yet" if was_run
                    else f"nothing to resume in {run_dir}")
    log.info("run %s: method %s, %d tasks (%s), model %s", run_dir, cfg.method.name, len(tasks),
             ", ".join(t.info.name for t in tasks), cfg.model.name)
    log.info("data: %s; scored on eval.split %s (%s)", _data_words(cfg), cfg.eval.split,
             ", ".join(sorted({getattr(t, "source", "test file") for t in tasks})))
    from .loop import ContinualTrainer
    from .monitoring import describe_history_pass

    trainer = ContinualTrainer(cfg, run_dir, tasks, accelerator=accelerator, progress=progress)
    acc = trainer.accelerator
    if cfg.train.mixed_precision not in ("no", "auto") and not acc.native_amp:
        log.warning("train.mixed_precision: %s is not applied on %s (Accelerate has no %s "
                    "autocast there): training runs in the model's precision",
                    cfg.train.mixed_precision, acc.device.type, cfg.train.mixed_precision)
    log.info("mixed precision: %s (train.mixed_precision: %s)",
             acc.mixed_precision if acc.native_amp else "none", cfg.train.mixed_precision)
    from .precision import describe_bfloat16, probe_shape

    log.info("bfloat16: %s", describe_bfloat16(acc.device, probe_shape(trainer.net.config)))
    weights = str(getattr(trainer.net.get_base_model(), "dtype", "?")).replace("torch.", "")
    log.info("backbone weights: %s (model.dtype: %s); LoRA adapter: float32", weights, cfg.model.dtype)
    log.info("history loss (where measured): %s", describe_history_pass(cfg, trainer.model))
    import torch

    log.info("torch CPU threads: %d (--threads N sets them)", torch.get_num_threads())
    from .threads import busy_cores_note

    busy = busy_cores_note(torch.get_num_threads()) if acc.device.type == "cpu" else None
    if busy:
        log.warning("%s", busy)
    try:
        metrics = trainer.run(resume=resume)
    except KeyboardInterrupt:
        message = interrupted_message(run_dir, resume_command)
        log.warning("%s", message)
        raise KeyboardInterrupt(message) from None
    log.info("done: OP %s, BWT %s, FWT %s", _fmt(metrics.get("op")),
             _fmt(metrics.get("bwt"), signed=True), _fmt(metrics.get("fwt"), signed=True))
    return metrics


def _data_words(cfg: RunConfig) -> str:
    """Where the run's tasks come from, for the log."""
    entries = cfg.data.tasks or ["order or demo"]         # data.order and the demo: names
    names = any(isinstance(t, str) for t in entries)
    parts = ([cfg.data.dir or "the built-in demo stream"] if names else []) + (
        ["the files of data.tasks' mappings"] if not all(isinstance(t, str) for t in entries) else [])
    return " and ".join(parts)


def _fmt(v, signed: bool = False) -> str:
    """A metric in percent points for the log, as the CLI's --quiet line prints it."""
    return "-" if v is None else f"{v:+.2f}" if signed else f"{v:.2f}"
