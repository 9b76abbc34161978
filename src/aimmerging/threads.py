"""``--threads N`` of ``aimmerging run``, ``compare`` and ``demo``: torch's CPU threads."""

from __future__ import annotations

import argparse
import os
from typing import Optional


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads for this process (:func:`apply_threads`)."""
    p.add_argument("--threads", type=_thread_count, default=None, metavar="N",
                   help="torch CPU threads (default: torch's, one per core); 1 for each of "
                        "several runs sharing a machine")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS tells, else the machine's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _thread_count(text: str) -> int:
    """``--threads``'s value: a whole number from 1 to :func:`available_cpus` (more threads than
    CPUs only wait for each other; thousands cannot even be started)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    cpus = available_cpus()
    if value > cpus:
        raise argparse.ArgumentTypeError(f"at most {cpus} (the CPUs this process may use), got {value}")
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


def busy_cores_note(threads: int, load: Optional[float] = None) -> Optional[str]:
    """A warning when the machine's load leaves fewer free cores than ``threads`` torch threads
    (None otherwise). ``load`` is the 1-minute load average (read from the OS when None; no
    warning where the OS does not tell). Free cores = :func:`available_cpus` - load."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return None
    free = available_cpus() - load
    if free >= threads - 0.5:
        return None
    hint = "; --threads 1 waits less on shared cores" if threads > 1 else ""
    return (f"the machine is busy: a load of {load:.1f} leaves about {max(free, 0):.1f} of "
            f"{available_cpus()} cores free for {threads} torch thread{'s' if threads > 1 else ''}, "
            f"so the run will be slower than usual{hint}")
