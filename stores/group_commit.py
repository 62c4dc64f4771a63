"""Group commit: many threads hand their PostgreSQL writes to one writer thread, which writes
whatever has gathered in ONE transaction and tells each thread how its write ended.

Why: on a machine of few cores a job's cost is CPU, and most of it was per statement and per
commit (SQLAlchemy, psycopg, the PostgreSQL backend, the WAL flush), paid once per job per
step. A writer that takes everything queued while its previous transaction ran pays it once
per group: the busier the process, the larger the groups, with no added wait when idle (it
never holds a write back to fill a group).

Durability is unchanged for the caller: ``write`` returns only after the transaction holding
its item committed, so a task thread that acks after ``write`` acks only what is on disk.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# Writes one group in the caller's transaction; returns one result per item, in order.
GroupWriter = Callable[[Connection, Sequence[ItemT]], Sequence[ResultT]]


@dataclass
class _Pending(Generic[ItemT, ResultT]):
    item: ItemT
    key: Hashable
    future: Future[ResultT]


class GroupCommitter(Generic[ItemT, ResultT]):
    """One writer thread per instance; ``write`` is safe to call from any number of threads.

    ``key_of`` names what an item writes (a job id): two items with the same key never share
    a group, so the second one sees the first one's effect, in submission order.
    """

    def __init__(
        self,
        engine: Engine,
        write_group: GroupWriter[ItemT, ResultT],
        key_of: Callable[[ItemT], Hashable],
        name: str,
        max_group_size: int = 256,
    ) -> None:
        self.engine = engine
        self.write_group = write_group
        self.key_of = key_of
        self.name = name
        self.max_group_size = max_group_size
        self.groups_written = 0
        self.items_written = 0
        self._queue: deque[_Pending[ItemT, ResultT]] = deque()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._in_flight: list[_Pending[ItemT, ResultT]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        # A forked child has none of the parent's threads: it starts its own writer and
        # leaves the parent's queue (those writes belong to the parent) behind.
        os.register_at_fork(after_in_child=partial(_reset_after_fork, weakref.ref(self)))

    def _reset_in_child(self) -> None:
        self._queue = deque()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._in_flight = []
        self._thread = None

    def submit(self, item: ItemT) -> Future[ResultT]:
        """Queues ``item`` for the next group; the future ends once that group committed."""
        pending: _Pending[ItemT, ResultT] = _Pending(item, self.key_of(item), Future())
        with self._lock:
            if self._thread is None:
                # Started on first use (and again after ``close``): a process that never
                # writes holds no thread.
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._queue.append(pending)
            self._wakeup.notify()
        return pending.future

    def write(self, item: ItemT) -> ResultT:
        """Writes ``item`` in the next group and returns its result once committed.

        Raises:
            whatever writing the item raised (``OperationalError`` when PostgreSQL failed:
            transient, nothing of the group was written).
        """
        return self.submit(item).result()

    def flush(self) -> None:
        """Waits until everything submitted before this call is committed (or failed)."""
        with self._lock:
            futures = [p.future for p in (*self._in_flight, *self._queue)]
        wait_all(futures)

    def close(self) -> None:
        """Writes what is queued, then stops the writer thread (a later write starts a new
        one, as a closed client's publisher reconnects)."""
        with self._lock:
            self._stopping = True
            self._wakeup.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._lock:
            self._stopping = False
        if thread is not None:
            log.info("%s: wrote %d items in %d transactions", self.name, self.items_written,
                     self.groups_written)

    def _next_group(self) -> list[_Pending[ItemT, ResultT]] | None:
        with self._lock:
            while not self._queue:
                if self._stopping:
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return None
                self._wakeup.wait()
            group: list[_Pending[ItemT, ResultT]] = []
            keys: set[Hashable] = set()
            deferred: list[_Pending[ItemT, ResultT]] = []
            while self._queue and len(group) < self.max_group_size:
                pending = self._queue.popleft()
                if pending.key in keys:
                    deferred.append(pending)
                else:
                    keys.add(pending.key)
                    group.append(pending)
            self._queue.extendleft(reversed(deferred))
            self._in_flight = group
            return group

    def _run(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            try:
                self._write(group)
            finally:
                with self._lock:
                    self._in_flight = []

    def _write(self, group: list[_Pending[ItemT, ResultT]]) -> None:
        try:
            results = self._transaction([p.item for p in group])
        except OperationalError as e:
            # PostgreSQL itself failed: every item sees the transient error and retries.
            for pending in group:
                pending.future.set_exception(e)
            return
        except Exception as e:  # noqa: BLE001 - handed to the waiting threads
            if len(group) == 1:
                group[0].future.set_exception(e)
                return
            # One item may be at fault: write each alone so that the others still commit.
            log.warning("%s: a group of %d failed (%r); writing its items one by one",
                        self.name, len(group), e)
            for pending in group:
                self._write_alone(pending)
            return
        self.groups_written += 1
        self.items_written += len(group)
        for pending, result in zip(group, results, strict=True):
            pending.future.set_result(result)

    def _write_alone(self, pending: _Pending[ItemT, ResultT]) -> None:
        try:
            (result,) = self._transaction([pending.item])
        except Exception as e:  # noqa: BLE001 - handed to the waiting thread
            pending.future.set_exception(e)
        else:
            pending.future.set_result(result)

    def _transaction(self, items: list[ItemT]) -> Sequence[ResultT]:
        with self.engine.begin() as connection:
            return self.write_group(connection, items)


def _reset_after_fork(committer: weakref.ref[GroupCommitter[ItemT, ResultT]]) -> None:
    alive = committer()
    if alive is not None:
        alive._reset_in_child()
