"""Which job may enter the engine after a crash: suspects run in shrinking groups.

A worker holds many jobs unacked; a crash (kill -9, a segfault) redelivers them all, and the
job at fault cannot be told from the jobs held beside it. A delivery of a job whose row counts
k >= 1 earlier deliveries that did not finish is a *suspect at level k*. It enters the engine
only while no clean (level 0) job is there and fewer than ``group_cap(k, slots)`` =
max(1, slots >> k) jobs are, the cap of the deepest suspect inside ruling: each crash halves
the group, so after ``levels_before_solo(slots)`` group levels the culprit runs alone. Only a
run alone (a *solo run*, counted in its row before it enters) is charged to a job: the runner
dead-letters a job with ``max_attempts`` solo runs that did not finish (workers/execution.py).

Clean jobs wait while a suspect is inside or waiting, so a stream of clean work cannot starve
suspects (they are finite). Waiting suspects enter by fewest solo runs, then arrival: a job
held beside a culprit runs before the culprit's next solo run, which would kill the worker
again. Pure: threads and a condition, no I/O.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


def group_cap(level: int, slots: int) -> int:
    """How many jobs may share the engine with a suspect at ``level`` (>= 1)."""
    return max(1, slots >> level)


def levels_before_solo(slots: int) -> int:
    """The suspect levels k >= 1 whose group is larger than one job."""
    return max(0, slots.bit_length() - 2)


def unfinished_deliveries_allowed(max_attempts: int, slots: int) -> int:
    """The most deliveries of a job that may end unfinished before it is dead even without
    ``max_attempts`` solo runs, so that a job whose crash is outside the engine (never solo)
    does not loop forever: its clean delivery, its group levels, ``max_attempts``, and one
    solo run of each other job held beside it, each of which may go before it once."""
    return 1 + levels_before_solo(slots) + max_attempts + slots


@dataclass(order=True)
class _Waiter:
    order: tuple[int, int]
    level: int = field(compare=False)
    admitted: bool = field(default=False, compare=False)


class IsolationGate:
    """One per worker, in front of all its engines (a crash takes every engine down)."""

    def __init__(self, slots: int) -> None:
        """``slots``: the jobs the worker holds at once (what one crash redelivers)."""
        self.slots = slots
        self._changed = threading.Condition()
        self._clean_inside = 0
        self._suspect_levels_inside: list[int] = []
        self._waiting: list[_Waiter] = []
        self._arrivals = itertools.count()

    def runs_alone(self, level: int) -> bool:
        """Whether a suspect at ``level`` has the engine to itself."""
        return level >= 1 and group_cap(level, self.slots) == 1

    def submit_admitted(self, level: int, solo_runs: int,
                        submit: Callable[[], Future[T]]) -> Future[T]:
        """Waits until a job at ``level`` with ``solo_runs`` may enter, then calls ``submit``
        (which hands it to the engine); the job leaves when the returned future is done."""
        self._enter(level, solo_runs)
        try:
            future = submit()
        except BaseException:
            self._leave(level)
            raise
        future.add_done_callback(lambda _: self._leave(level))
        return future

    def _enter(self, level: int, solo_runs: int) -> None:
        with self._changed:
            if level == 0:
                self._changed.wait_for(
                    lambda: not self._suspect_levels_inside and not self._waiting)
                self._clean_inside += 1
                return
            waiter = _Waiter((solo_runs, next(self._arrivals)), level)
            heapq.heappush(self._waiting, waiter)
            self._admit_waiting()
            try:
                self._changed.wait_for(lambda: waiter.admitted)
            except BaseException:  # interrupted while waiting: it must not hold a place
                if waiter.admitted:
                    self._suspect_levels_inside.remove(level)
                else:
                    self._waiting.remove(waiter)
                    heapq.heapify(self._waiting)
                self._admit_waiting()
                raise

    def _leave(self, level: int) -> None:
        with self._changed:
            if level == 0:
                self._clean_inside -= 1
            else:
                self._suspect_levels_inside.remove(level)
            self._admit_waiting()
            self._changed.notify_all()

    def _admit_waiting(self) -> None:
        # In order only: a head that does not fit holds the rest back, so the group of the
        # suspect that goes next is the one its level promises.
        while self._waiting and self._clean_inside == 0:
            head = self._waiting[0]
            deepest = max([head.level, *self._suspect_levels_inside])
            if len(self._suspect_levels_inside) >= group_cap(deepest, self.slots):
                break
            heapq.heappop(self._waiting)
            head.admitted = True
            self._suspect_levels_inside.append(head.level)
        self._changed.notify_all()
