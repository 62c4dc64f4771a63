"""The cold-start scheduler: which model loads next on a device, and what to evict for it.

Seed 003's scheduler: a queue of model loads ordered by priority, then deadline, admitted while
they fit the device's memory budget; instances LOADING -> READY -> DRAINING (or FAILED), warmed
up before READY; when memory is short, the least recently used idle READY model is evicted. A
failed load is retried with backoff, a bounded number of times, and never blocks the others.

Pure data-structure code in the manner of nano-vllm's scheduler: no torch, no clock, no I/O.
A driver (the worker, or ``routing.coldstart_sim``) tells it what happened (``loaded``,
``warmed_up``, ``load_failed``, ``drained``, ``job_started``/``job_finished``) and carries out
the actions ``next_actions`` returns (``StartLoad``, ``Evict``, ``GiveUp``).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from enum import StrEnum

from infermq.errors import InvalidInstanceTransition


class InstanceState(StrEnum):
    """Where a model instance stands on the device."""

    LOADING = "LOADING"
    READY = "READY"
    DRAINING = "DRAINING"
    FAILED = "FAILED"


ALLOWED_TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    InstanceState.LOADING: frozenset({InstanceState.READY, InstanceState.FAILED}),
    InstanceState.READY: frozenset({InstanceState.DRAINING, InstanceState.FAILED}),
    InstanceState.DRAINING: frozenset(),  # a drained instance is removed, not revived
    InstanceState.FAILED: frozenset({InstanceState.LOADING}),
}


@dataclass(frozen=True)
class StartLoad:
    """Load the model's weights now (its memory is reserved); ``attempt`` counts from 1."""

    model: str
    attempt: int


@dataclass(frozen=True)
class Evict:
    """Drain the model (stop consuming, finish in-flight jobs), unload it, report ``drained``."""

    model: str


@dataclass(frozen=True)
class GiveUp:
    """The model failed ``attempts`` loads; it stays FAILED until requested again."""

    model: str
    attempts: int
    error: str


Action = StartLoad | Evict | GiveUp


@dataclass
class Instance:
    """One model on the device, from its first load to its removal."""

    model: str
    memory_mib: int
    state: InstanceState
    attempt: int = 1
    weights_loaded: bool = False
    last_used_s: float = 0.0
    in_flight: int = 0
    queue_key: tuple[float, float, int] = (0.0, float("inf"), 0)
    pinned: bool = False

    def move_to(self, new: InstanceState) -> None:
        """Changes state along an allowed edge.

        Raises:
            InvalidInstanceTransition: ``new`` is not reachable from the current state.
        """
        if new not in ALLOWED_TRANSITIONS[self.state]:
            allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[self.state])) or "none"
            raise InvalidInstanceTransition(
                f"model {self.model}: {self.state} -> {new} is not allowed (from {self.state}: "
                f"{allowed})"
            )
        self.state = new


@dataclass(order=True)
class _Pending:
    sort_key: tuple[float, float, int]
    model: str = field(compare=False)
    memory_mib: int = field(compare=False)
    priority: int = field(compare=False)
    deadline_s: float = field(compare=False)
    attempt: int = field(compare=False, default=1)
    not_before_s: float = field(compare=False, default=float("-inf"))


class ColdStartScheduler:
    """Admits model loads by priority, then deadline, within one device's memory budget.

    The head of the queue is never overtaken by a load that fits only because the head does
    not (no starvation of a large, urgent model by a stream of small ones); loads waiting out a
    retry backoff are not the head. ``max_parallel_loads`` caps concurrent loads for devices
    whose load path (disk, PCIe) slows down when shared.
    """

    def __init__(
        self,
        memory_budget_mib: int,
        *,
        max_attempts: int = 3,
        retry_backoff_s: float = 5.0,
        backoff_factor: float = 2.0,
        max_parallel_loads: int | None = None,
    ) -> None:
        self.memory_budget_mib = memory_budget_mib
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.backoff_factor = backoff_factor
        self.max_parallel_loads = max_parallel_loads
        self.instances: dict[str, Instance] = {}
        self._pending: list[_Pending] = []
        self._seq = itertools.count()

    # --- what the driver asks and reports ------------------------------------------------

    def request(
        self,
        model: str,
        memory_mib: int,
        now_s: float,
        *,
        priority: int = 0,
        deadline_s: float = float("inf"),
    ) -> None:
        """Asks for ``model`` to be READY (its queue has messages). Idempotent.

        A READY model counts as used now; one LOADING or already queued keeps its place
        (a higher priority or earlier deadline moves it up); a DRAINING or given-up FAILED one
        is queued afresh.
        """
        instance = self.instances.get(model)
        if instance is not None and instance.state == InstanceState.READY:
            instance.last_used_s = now_s
            return
        if instance is not None and instance.state == InstanceState.LOADING:
            return
        for entry in self._pending:
            if entry.model == model:
                if (-priority, deadline_s) < entry.sort_key[:2]:
                    entry.priority, entry.deadline_s = priority, deadline_s
                    entry.sort_key = (-priority, deadline_s, entry.sort_key[2])
                    heapq.heapify(self._pending)
                return
        heapq.heappush(
            self._pending,
            _Pending((-priority, deadline_s, next(self._seq)), model, memory_mib, priority,
                     deadline_s),
        )

    def loaded(self, model: str, now_s: float) -> None:
        """The weights are on the device; warm-up comes next (the model is not READY yet)."""
        instance = self._instance(model, InstanceState.LOADING)
        instance.weights_loaded = True
        instance.last_used_s = now_s

    def warmed_up(self, model: str, now_s: float) -> None:
        """Warm-up ran (kernels compiled, caches allocated): the model is READY.

        Raises:
            InvalidInstanceTransition: the model is not LOADING with its weights loaded.
        """
        instance = self._instance(model, InstanceState.LOADING)
        if not instance.weights_loaded:
            raise InvalidInstanceTransition(
                f"model {model} warmed up before its weights were loaded; call loaded() first"
            )
        instance.move_to(InstanceState.READY)
        instance.last_used_s = now_s

    def load_failed(self, model: str, now_s: float, error: str) -> GiveUp | None:
        """The load or warm-up failed: FAILED, memory freed, retried after a backoff.

        Returns ``GiveUp`` when the model has used its ``max_attempts``.
        """
        instance = self._instance(model, InstanceState.LOADING)
        instance.move_to(InstanceState.FAILED)
        attempt = instance.attempt
        if attempt >= self.max_attempts:
            del self.instances[model]
            return GiveUp(model, attempt, error)
        instance.weights_loaded = False
        backoff_s = self.retry_backoff_s * self.backoff_factor ** (attempt - 1)
        priority, deadline_s = -int(instance.queue_key[0]), instance.queue_key[1]
        # the retry keeps the place the first request had in the queue
        heapq.heappush(
            self._pending,
            _Pending(instance.queue_key, model, instance.memory_mib, priority, deadline_s,
                     attempt + 1, now_s + backoff_s),
        )
        return None

    def drain(self, model: str) -> Evict:
        """Starts draining a READY model on purpose (scale-down); report ``drained`` later.

        Raises:
            InvalidInstanceTransition: the model is not READY.
        """
        self._instance(model, InstanceState.READY).move_to(InstanceState.DRAINING)
        return Evict(model)

    def drained(self, model: str) -> None:
        """A DRAINING model finished its jobs and was unloaded: its memory is free."""
        self._instance(model, InstanceState.DRAINING)
        del self.instances[model]

    def pin(self, model: str) -> None:
        """Keeps a READY model from eviction: the worker itself needs it between jobs (the
        embedding model of its router and semantic cache).

        Raises:
            InvalidInstanceTransition: the model is not READY.
        """
        self._instance(model, InstanceState.READY).pinned = True

    def job_started(self, model: str, now_s: float) -> None:
        instance = self._instance(model, InstanceState.READY)
        instance.in_flight += 1
        instance.last_used_s = now_s

    def job_finished(self, model: str, now_s: float) -> None:
        instance = self.instances[model]
        instance.in_flight = max(0, instance.in_flight - 1)
        instance.last_used_s = now_s

    # --- the decision --------------------------------------------------------------------

    def next_actions(self, now_s: float) -> list[Action]:
        """Loads to start and models to evict now, in the order to carry them out.

        Walks the queue in priority/deadline order: each load that fits starts; the first that
        does not fit evicts least-recently-used idle READY models until it will fit once they
        have drained (or, when even that cannot make room, waits), and blocks the loads after it.
        """
        actions: list[Action] = []
        waiting: list[_Pending] = []
        while self._pending:
            entry = heapq.heappop(self._pending)
            if entry.not_before_s > now_s:
                waiting.append(entry)  # in backoff: not the head, blocks nobody
                continue
            cap = self.max_parallel_loads
            if cap is not None and self.loading_count >= cap:
                waiting.append(entry)
                break
            if entry.memory_mib <= self.free_memory_mib:
                self._start(entry, now_s)
                actions.append(StartLoad(entry.model, entry.attempt))
                continue
            actions.extend(self._evict_for(entry.memory_mib))
            waiting.append(entry)
            break
        for entry in waiting:
            heapq.heappush(self._pending, entry)
        return actions

    # --- what the driver may read --------------------------------------------------------

    @property
    def used_memory_mib(self) -> int:
        """Memory held by every instance on the device (LOADING, READY, DRAINING)."""
        return sum(i.memory_mib for i in self.instances.values() if i.state != InstanceState.FAILED)

    @property
    def free_memory_mib(self) -> int:
        return self.memory_budget_mib - self.used_memory_mib

    @property
    def loading_count(self) -> int:
        return sum(1 for i in self.instances.values() if i.state == InstanceState.LOADING)

    def state(self, model: str) -> InstanceState | None:
        instance = self.instances.get(model)
        return instance.state if instance else None

    def pending_models(self) -> list[str]:
        """Queued loads in the order they would be admitted."""
        return [p.model for p in sorted(self._pending)]

    def next_retry_s(self) -> float | None:
        """When the earliest load in backoff may start: the driver wakes up then."""
        times = [p.not_before_s for p in self._pending if p.not_before_s > float("-inf")]
        return min(times) if times else None

    # --- internals -----------------------------------------------------------------------

    def _instance(self, model: str, expected: InstanceState) -> Instance:
        instance = self.instances.get(model)
        if instance is None or instance.state != expected:
            found = instance.state if instance else "absent"
            raise InvalidInstanceTransition(
                f"model {model} is {found}, not {expected}: the driver's report is out of order"
            )
        return instance

    def _start(self, entry: _Pending, now_s: float) -> None:
        instance = self.instances.get(entry.model)
        if instance is not None and instance.state == InstanceState.FAILED:
            instance.move_to(InstanceState.LOADING)
            instance.attempt = entry.attempt
            return
        self.instances[entry.model] = Instance(
            entry.model, entry.memory_mib, InstanceState.LOADING, attempt=entry.attempt,
            last_used_s=now_s, queue_key=entry.sort_key,
        )

    def _evict_for(self, memory_mib: int) -> list[Evict]:
        draining_mib = sum(
            i.memory_mib for i in self.instances.values() if i.state == InstanceState.DRAINING
        )
        shortfall = memory_mib - self.free_memory_mib - draining_mib
        if shortfall <= 0:
            return []  # enough is already on its way out
        idle = sorted(
            (i for i in self.instances.values()
             if i.state == InstanceState.READY and i.in_flight == 0 and not i.pinned),
            key=lambda i: i.last_used_s,
        )
        if sum(i.memory_mib for i in idle) < shortfall:
            return []  # evicting would not make room: keep serving, wait for jobs to finish
        evictions = []
        for instance in idle:
            if shortfall <= 0:
                break
            instance.move_to(InstanceState.DRAINING)
            shortfall -= instance.memory_mib
            evictions.append(Evict(instance.model))
        return evictions
