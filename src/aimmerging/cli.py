"""The ``aimmerging`` command line.

::

    aimmerging run CONFIG [--set key=value ...] [--data DIR] [--output DIR] [--resume | --overwrite] [--threads N]
    aimmerging demo [--output DIR] [--model NAME] [--threads N]
    aimmerging compare CONFIG [--methods m1,m2] [--set ...] [--data DIR] [--output DIR] [--threads N]
    aimmerging plot RUN_DIR [--baseline RUN_DIR]
    aimmerging export RUN_DIR [--stage N] --output DIR
    aimmerging bench [--quick] [--output DIR]
    aimmerging data check DIR|CONFIG | data show DIR|CONFIG TASK --split SPLIT --limit N --json
    aimmerging docs [--check]

A configuration or data mistake prints one line ``error: ...`` and exits with 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Optional

from .errors import AimmergingError
from .threads import add_threads_arg, apply_threads


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (see configs/)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                   metavar="KEY=VALUE", help="override config values, e.g. --set train.epochs=1 "
                                             "data.n_train=16 (repeatable)")


def cmd_run(args) -> int:
    """``aimmerging run``. Every rank of a multi-process run stops on the same errors; only
    rank 0 prints them (one line), so a torchrun launch shows one ``error:`` line. SIGTERM
    stops it as Ctrl-C does (:func:`_sigterm_as_interrupt`)."""
    apply_threads(args)
    with _sigterm_as_interrupt() as terminated:
        return _run_command(args, terminated)


def _run_command(args, terminated: list) -> int:
    from .config import load_config, split_config_argument
    from .runner import run

    try:
        args.config, args.overrides = split_config_argument(args.config, args.overrides)
        cfg = load_config(args.config, args.overrides, data=args.data)
        out = Path(args.output) if args.output else \
            Path("runs") / f"{Path(args.config).stem}_{cfg.method.name}"
        accelerator = _accelerator_for(cfg, out)
        metrics = run(cfg, out, resume=args.resume, overwrite=args.overwrite,
                      progress=not args.quiet, accelerator=accelerator,
                      resume_command=_resume_command(args, out))
    except KeyboardInterrupt:             # the run's log line has named the --resume command
        raise SystemExit(143 if terminated else 130) from None
    except AimmergingError as exc:
        _fail(type(exc), str(exc))
    except OSError as exc:         # an unwritable folder, a full disk ...
        _fail(AimmergingError, f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    if accelerator is None or accelerator.is_main_process:
        if args.quiet and isinstance(metrics, dict) and metrics.get("op") is not None:
            bwt, fwt = metrics.get("bwt"), metrics.get("fwt")
            print(f"OP {metrics['op']:.2f}   BWT {'-' if bwt is None else f'{bwt:+.2f}'}   "
                  f"FWT {'-' if fwt is None else f'{fwt:+.2f}'}   merges {metrics.get('merges', 0)}")
        print(f"run folder: {out}")
    return 0


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within it, SIGTERM (what ``timeout``, ``kill`` and job schedulers send) stops a run as
    Ctrl-C does: logged, with the command that resumes it. Yields a list that holds the
    signal once one came (the run then exits 143, 128 + SIGTERM, instead of Ctrl-C's 130).
    The previous handler is back on leaving; a second SIGTERM meets it."""
    import signal
    import threading

    came: list = []
    if threading.current_thread() is not threading.main_thread():
        yield came
        return

    def handler(signum, frame):
        came.append(signum)
        signal.signal(signal.SIGTERM, before)
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, handler)
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, before)


def _resume_command(args, out: Path) -> str:
    """The ``aimmerging run`` command line that resumes this run (quoted for a POSIX shell)."""
    import shlex

    words = ["aimmerging", "run", args.config]
    if args.overrides:
        words += ["--set", *args.overrides]
    if getattr(args, "data", None):
        words += ["--data", args.data]
    words += ["--output", str(out), "--resume"]
    if getattr(args, "threads", None):
        words += ["--threads", str(args.threads)]
    if args.quiet:
        words.append("--quiet")
    return shlex.join(words)


def _fail(kind, message: str) -> None:
    """Re-raise as one line on rank 0; other ranks exit with 2 silently."""
    if int(os.environ.get("RANK", "0")) != 0:
        raise SystemExit(2)
    raise kind(" ".join(message.split())) from None


def _accelerator_for(cfg, run_dir: Optional[Path] = None):
    """An Accelerator when started by torchrun with several processes, else None.

    ``torchrun --nproc_per_node N -m aimmerging run CONFIG ...`` starts N processes:
    NCCL on GPUs, gloo on CPUs (Accelerate needs ``cpu=True`` to choose MULTI_CPU).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from datetime import timedelta

    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from .errors import ConfigError
    from .models import resolve_mixed_precision

    world = int(os.environ["WORLD_SIZE"])
    # evaluation runs on rank 0 while the others wait: allow long waits
    acc = Accelerator(mixed_precision=resolve_mixed_precision(cfg.train.mixed_precision,
                                                              cfg.model.name),
                      log_with=cfg.train.report_to, cpu=not torch.cuda.is_available(),
                      project_dir=str(run_dir) if run_dir is not None else None,
                      kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=3))])
    if acc.num_processes != world:
        raise ConfigError(f"WORLD_SIZE is {world} but Accelerate set up {acc.num_processes} "
                          f"process(es) ({acc.distributed_type}); launch with torchrun")
    return acc


def cmd_demo(args) -> int:
    from .demo import run_demo

    apply_threads(args)
    return run_demo(Path(args.output), overwrite=args.overwrite, model=args.model)


def cmd_export(args) -> int:
    from .export import export_run
    from .runner import quiet_libraries

    quiet_libraries()
    dest, adapter = export_run(Path(args.run_dir), Path(args.output), args.stage)
    print(f"exported {adapter.name} ({adapter}) merged into its backbone: {dest}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line errors: ``error: aimmerging run: <what> (...)``
    instead of the usage lines; sub-commands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} ({self.prog} --help lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    from .cli_data import add_data_parser
    from .data.location import add_data_arg

    parser = _Parser(prog="aimmerging", description=__doc__.split("\n")[1])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "run", help="train through a task order with one method",
        description="Train through a task order with one method. Several processes (data "
                    "parallel; NCCL on GPUs, gloo on CPUs): torchrun --nproc_per_node N -m "
                    "aimmerging run CONFIG ... (resume with the same N).")
    _add_config_args(p)
    p.add_argument("--output", help="run folder (default: runs/<config>_<method>)")
    add_data_arg(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run folder from its checkpoint")
    g.add_argument("--overwrite", action="store_true",
                   help="replace a run already in the folder (refused if it holds other files)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log on the terminal")
    add_threads_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="a built-in 4-task stream on smollm2-135m, no data needed",
                       description="Train SmolLM2-135M-Instruct through four generated tasks "
                                   "with AIMMerging (configs/demo.yaml, no data needed) and "
                                   "print every task's score after every stage.")
    p.add_argument("--output", default="runs/demo",
                   help="run folder (default: runs/demo); a demo run already there is replaced")
    p.add_argument("--model", default="smollm2-135m", help="backbone (default: smollm2-135m)")
    p.add_argument("--overwrite", action="store_true", default=True, help=argparse.SUPPRESS)
    add_threads_arg(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="merge a stage's adapter into the backbone and save it",
                       description="Merge a stage's LoRA adapter into its backbone and save a plain "
                                   "Hugging Face model folder (safetensors) with the tokenizer.")
    p.add_argument("run_dir", help="a run folder (aimmerging run --output)")
    p.add_argument("--stage", type=int, default=None,
                   help="stage number, from 1 (default: the last stage that finished)")
    p.add_argument("--output", required=True,
                   help="model folder to write: new, empty or an earlier export (replaced)")
    p.set_defaults(func=cmd_export)

    for name, module in (("compare", "compare"), ("plot", "plots"), ("bench", "bench"),
                         ("docs", "docgen")):
        try:
            mod = __import__(f"aimmerging.{module}", fromlist=["add_parser"])
        except ImportError:
            continue
        mod.add_parser(sub)

    add_data_parser(sub)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except AimmergingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(str(exc) or "interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
