"""``--threads N`` of ``aimmerging run`` and ``aimmerging compare``: torch's CPU threads."""

from __future__ import annotations

import argparse


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads for this process (:func:`apply_threads`)."""
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's, one per core); 1 for each of "
                        "several runs sharing a machine")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def apply_threads(args) -> None:
    """Set torch's intra-op CPU threads from ``--threads`` (nothing when it is not given).

    On cores that other jobs share, torch's default of one thread per core waits at every
    operation for the slowest one (``benchmarks/README.md``: a SmolLM2 prefill took 2.3x as
    long on 2 busy cores with 2 threads as with 1); the run log records the count used.
    """
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
