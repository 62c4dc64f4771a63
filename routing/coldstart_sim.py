"""A discrete-event simulation of one device cold-starting models, driving the real scheduler.

The physics, stated so that benchmarks can be judged:

- a model's load takes ``load_s`` alone; loads running together share the device's load path
  (disk, PCIe), each progressing at ``1 / (1 + contention * (k - 1))`` of its solo speed while
  ``k`` loads run: seed 003's "parallel loading under contention";
- warm-up (``warmup_s``) follows the load and is not slowed by other loads;
- a model's memory is held from the start of its load until it has drained after an eviction;
- once READY a model serves its waiting burst for ``serve_s``, then is idle (evictable);
- an eviction takes ``drain_s``;
- a model listed with ``failures=n`` fails its first ``n`` attempts halfway through the load.

Pure and deterministic: no clock, no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from routing.coldstart import Action, Evict, GiveUp, StartLoad

EPSILON_S = 1e-9


@dataclass(frozen=True)
class SimModel:
    """One model to cold-start: its cost, its demand, and how often its load fails."""

    name: str
    memory_mib: int
    load_s: float
    warmup_s: float = 0.0
    priority: int = 0
    deadline_s: float = float("inf")
    requested_at_s: float = 0.0
    serve_s: float = 0.0
    failures: int = 0


class LoadScheduler(Protocol):
    """What the simulator needs of a scheduler; ``ColdStartScheduler`` is one."""

    def request(
        self, model: str, memory_mib: int, now_s: float, *, priority: int = 0,
        deadline_s: float = float("inf"),
    ) -> None: ...
    def next_actions(self, now_s: float) -> list[Action]: ...
    def loaded(self, model: str, now_s: float) -> None: ...
    def warmed_up(self, model: str, now_s: float) -> None: ...
    def load_failed(self, model: str, now_s: float, error: str) -> GiveUp | None: ...
    def drained(self, model: str) -> None: ...
    def job_started(self, model: str, now_s: float) -> None: ...
    def job_finished(self, model: str, now_s: float) -> None: ...
    def next_retry_s(self) -> float | None: ...


@dataclass
class SimResult:
    """When each model first became READY, and what happened on the way."""

    ready_at_s: dict[str, float]
    gave_up: list[str]
    events: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def makespan_s(self) -> float:
        """Time until every model that did not give up has been READY."""
        return max(self.ready_at_s.values(), default=0.0)

    def order(self, kind: str) -> list[str]:
        """Models in the order of one kind of event (``start``, ``ready``, ``evict``...)."""
        return [model for _, k, model in self.events if k == kind]


@dataclass
class _Load:
    model: SimModel
    attempt: int
    remaining_work_s: float
    fail_at_work_s: float | None


def simulate(
    scheduler: LoadScheduler, models: list[SimModel], contention: float = 0.0,
    drain_s: float = 0.0, horizon_s: float = 1e6,
) -> SimResult:
    """Runs the cold start of ``models`` to the end (every model READY or given up)."""
    by_name = {m.name: m for m in models}
    attempts_failed: dict[str, int] = {m.name: 0 for m in models}
    loads: dict[str, _Load] = {}
    timers: list[tuple[float, str, str]] = []  # (time, kind, model): warm, served, drained
    result = SimResult(ready_at_s={}, gave_up=[])
    arrivals = sorted(models, key=lambda m: m.requested_at_s)
    now_s = 0.0

    def log(kind: str, model: str) -> None:
        result.events.append((now_s, kind, model))

    while now_s < horizon_s:
        while arrivals and arrivals[0].requested_at_s <= now_s + EPSILON_S:
            m = arrivals.pop(0)
            scheduler.request(m.name, m.memory_mib, now_s, priority=m.priority,
                              deadline_s=m.deadline_s)
        for action in scheduler.next_actions(now_s):
            if isinstance(action, StartLoad):
                m = by_name[action.model]
                fails = attempts_failed[m.name] < m.failures
                loads[m.name] = _Load(m, action.attempt, m.load_s, m.load_s / 2 if fails else None)
                log("start", m.name)
            elif isinstance(action, Evict):
                timers.append((now_s + drain_s, "drained", action.model))
                log("evict", action.model)
        done = len(result.ready_at_s) + len(result.gave_up) == len(models)
        if done and not loads:
            return result

        speed = 1.0 / (1.0 + contention * (len(loads) - 1)) if loads else 0.0
        candidates = [t for t, _, _ in timers]
        for load in loads.values():
            target = (load.remaining_work_s - (load.model.load_s - load.fail_at_work_s)
                      if load.fail_at_work_s is not None else load.remaining_work_s)
            candidates.append(now_s + max(target, 0.0) / speed)
        if arrivals:
            candidates.append(arrivals[0].requested_at_s)
        retry_s = scheduler.next_retry_s()
        if retry_s is not None and retry_s > now_s:
            candidates.append(retry_s)
        if not candidates:
            raise ValueError(f"simulation stalled at t={now_s:.1f}s: nothing can progress")
        next_s = min(candidates)
        for load in loads.values():
            load.remaining_work_s -= (next_s - now_s) * speed
        now_s = next_s

        for name in list(loads):
            load = loads[name]
            failed_at = (None if load.fail_at_work_s is None
                         else load.model.load_s - load.fail_at_work_s)
            if failed_at is not None and load.remaining_work_s <= failed_at + EPSILON_S:
                del loads[name]
                attempts_failed[name] += 1
                log("fail", name)
                if scheduler.load_failed(name, now_s, "simulated load failure") is not None:
                    result.gave_up.append(name)
                    log("give_up", name)
            elif load.remaining_work_s <= EPSILON_S:
                del loads[name]
                scheduler.loaded(name, now_s)
                timers.append((now_s + load.model.warmup_s, "warm", name))
        due = sorted(t for t in timers if t[0] <= now_s + EPSILON_S)
        timers = [t for t in timers if t[0] > now_s + EPSILON_S]
        for _, kind, name in due:
            if kind == "warm":
                scheduler.warmed_up(name, now_s)
                result.ready_at_s.setdefault(name, now_s)
                log("ready", name)
                scheduler.job_started(name, now_s)
                timers.append((now_s + by_name[name].serve_s, "served", name))
            elif kind == "served":
                scheduler.job_finished(name, now_s)
            elif kind == "drained":
                scheduler.drained(name)
                log("drained", name)
    raise ValueError(f"simulation did not finish within {horizon_s}s")
