"""Runs that take turns, one optimizer step at a time, so that they are timed side by side.

Two runs timed one after the other see different machines: on a shared CPU the speed of
the same step drifts by a few percent over minutes, which is the size of the overhead
ratios the benchmark compares. :func:`run_in_turns` runs several
:func:`~benchmarks._common.run_trainer` runs in one process, each in its own thread, and
lets exactly one of them compute at any time: a run hands the turn on when it reaches its
next optimizer step, so each run's step, with what follows it (history loss, merge,
rehearsal, evaluation, checkpoint), is timed while the other runs wait. Drift then reaches
every run alike. The time a run spends waiting for its turn is taken out of its
``train_step_seconds`` and ``train_seconds`` (both include the optimizer-step call in which
it waits) and reported as ``waited_seconds``.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional, Sequence


class Turns:
    """A turn that passes round ``n`` runs in order, skipping runs that have finished."""

    def __init__(self, n: int) -> None:
        self.n, self.turn = n, 0
        self.done = [False] * n
        self.cond = threading.Condition()

    def _pass_on(self, i: int) -> None:
        for k in range(1, self.n + 1):
            j = (i + k) % self.n
            if not self.done[j]:
                self.turn = j
                break
        self.cond.notify_all()

    def wait(self, i: int) -> float:
        """Block until it is run ``i``'s turn; returns the seconds waited."""
        t0 = time.perf_counter()
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i)
        return time.perf_counter() - t0

    def hand_on(self, i: int) -> float:
        """Run ``i`` gives the turn to the next unfinished run and waits for it to come back."""
        with self.cond:
            self._pass_on(i)
        return self.wait(i)

    def finish(self, i: int) -> None:
        """Run ``i`` has ended (or failed): it leaves the round."""
        with self.cond:
            self.done[i] = True
            if self.turn == i:
                self._pass_on(i)


def _take_turns(trainer, turns: Turns, i: int, waited: list) -> None:
    """Wrap ``trainer._optimizer_step`` so that each call first hands the turn on; the wait is
    subtracted from the timers that include the call."""
    inner = trainer._optimizer_step

    def step(*a, **k):
        w = turns.hand_on(i)
        waited.append(w)
        trainer.timing["train_step_seconds"] -= w
        trainer.timing["train_seconds"] -= w
        return inner(*a, **k)

    trainer._optimizer_step = step


def run_in_turns(jobs: Sequence[dict], run: Callable) -> list[dict]:
    """Run ``jobs`` (keyword arguments of ``run``, :func:`~benchmarks._common.run_trainer`,
    each with ``cfg``, ``run_dir``, ``tasks`` and optionally ``instrument``) taking turns step
    by step; returns their results in order, each with ``waited_seconds`` added and
    ``run_seconds`` less it.

    Raises:
        the first run's error, after every run has stopped.
    """
    turns = Turns(len(jobs))
    results: list[Optional[dict]] = [None] * len(jobs)
    errors: list[BaseException] = []

    def worker(i: int, job: dict) -> None:
        waited: list[float] = []
        user = job.get("instrument")

        def instrument(trainer):
            if user is not None:
                user(trainer)
            _take_turns(trainer, turns, i, waited)

        try:
            waited.append(turns.wait(i))    # the setup, too, runs in turn
            res = run(**{**job, "instrument": instrument})
            res["waited_seconds"] = sum(waited)
            res["run_seconds"] -= sum(waited[1:])   # waits inside the run
            results[i] = res
        except BaseException as exc:          # noqa: BLE001 - re-raised below
            errors.append(exc)
        finally:
            turns.finish(i)

    threads = [threading.Thread(target=worker, args=(i, dict(job)), name=f"turns-{i}")
               for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


__all__ = ["Turns", "run_in_turns"]
