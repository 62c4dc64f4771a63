"""Faults of the shared services, and a stream of jobs to run through them (tests/test_chaos.py).

Every fault holds ``flock -x /tmp/infermq-services.lock`` for its case (other suites on this
machine hold it shared while they run) and restores every service however the case ends, with
the commands ``infermq services`` uses (infermq/services.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import redis

from infermq.errors import InfermqError
from infermq.services import is_listening, services_of, start_missing_services
from infermq.settings import Settings

SERVICES_LOCK = Path("/tmp/infermq-services.lock")
COMMAND_TIMEOUT_S = 120


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S)


def _command(settings: Settings, service: str) -> list[str]:
    [found] = [s for s in services_of(settings) if s.name == service]
    assert found.start_command is not None, f"{service} is not installed here"
    return found.start_command


def restore_services(settings: Settings) -> None:
    """Starts whatever is down: RabbitMQ's app (stopped by a case), Redis, PostgreSQL."""
    with contextlib.suppress(subprocess.SubprocessError):
        _run(["rabbitmqctl", "start_app"])
    start_missing_services(settings)
    wait_listening(settings)


def wait_listening(settings: Settings, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    for service in services_of(settings):
        while not is_listening(service.host, service.port):
            assert time.monotonic() < deadline, f"{service.name} did not come back"
            time.sleep(0.2)


@contextlib.contextmanager
def services_held(settings: Settings) -> Iterator[None]:
    """Holds the services lock exclusively for a case; every service is running afterwards."""
    with SERVICES_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            restore_services(settings)
            fcntl.flock(lock, fcntl.LOCK_UN)


def stop_rabbitmq_app() -> None:
    _run(["rabbitmqctl", "stop_app"])


def start_rabbitmq_app() -> None:
    _run(["rabbitmqctl", "start_app"])


def restart_postgresql(settings: Settings) -> None:
    _run([*_command(settings, "PostgreSQL")[:-1], "restart"])


def flush_redis(settings: Settings) -> None:
    redis.Redis.from_url(settings.redis_url).flushall()


def restart_redis(settings: Settings) -> None:
    """Redis keeps nothing on disk here: a restart is a flush that also drops connections."""
    client = redis.Redis.from_url(settings.redis_url)
    with contextlib.suppress(redis.ConnectionError):
        client.shutdown(nosave=True)
    _run(_command(settings, "Redis"))
    wait_listening(settings)


H = TypeVar("H")


@dataclass
class StreamOutcome:
    """What a stream of jobs saw: accepted job ids, typed refusals, what each waiter got."""

    accepted: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    untyped: list[str] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)  # job id -> final status or error


class JobStream(Generic[H]):
    """Submitter threads and waiter threads over one job kind, through a fault.

    ``submit(n)`` submits job ``n`` and returns a handle; ``job_id`` and ``wait`` read it. The
    stream submits ``before`` jobs, then, once ``fault_begun()`` is called, through the fault
    (refusals count, each followed by a short pause, as a client's retry would; at most
    ``during`` accepted), then ``after`` more accepted once ``fault_over()`` is called. Every
    accepted handle gets a waiter, and waiters wait throughout.
    """

    def __init__(self, submit: Callable[[int], H], job_id: Callable[[H], str],
                 wait: Callable[[H], str], before: int, during: int, after: int,
                 submitters: int = 3, waiters: int = 16) -> None:
        self.submit, self.job_id, self.wait = submit, job_id, wait
        self.before, self.during, self.after = before, during, after
        self.outcome = StreamOutcome()
        self._lock = threading.Condition()
        self._next = 0
        self._accepted_during = self._accepted_after = 0
        self._fault_begun = self._fault_over = False
        self._waiters = ThreadPoolExecutor(waiters, thread_name_prefix="waiter")
        self._waits: list[Future[None]] = []
        self._submitters = [threading.Thread(target=self._submit_loop, name=f"submitter{i}")
                            for i in range(submitters)]

    def start(self) -> None:
        for thread in self._submitters:
            thread.start()

    def add(self, handle: H) -> None:
        """Counts a job submitted outside the stream (held in the engine) and waits on it."""
        with self._lock:
            self.outcome.accepted.append(self.job_id(handle))
            self._waits.append(self._waiters.submit(self._wait_one, handle))

    def wait_accepted(self, count: int, timeout_s: float = 120) -> None:
        """Blocks until ``count`` jobs were accepted (the moment to inject a fault)."""
        with self._lock:
            assert self._lock.wait_for(lambda: len(self.outcome.accepted) >= count, timeout_s), \
                f"only {len(self.outcome.accepted)} of {count} jobs accepted in {timeout_s} s"

    def wait_refused(self, count: int, timeout_s: float = 60) -> None:
        """Blocks until ``count`` submits were refused (proof that the fault was seen)."""
        with self._lock:
            assert self._lock.wait_for(
                lambda: sum(self.outcome.refused.values()) >= count, timeout_s), \
                f"only {self.outcome.refused} refusals in {timeout_s} s"

    def fault_begun(self) -> None:
        """Lets the submitters go on through the fault (they stop after ``before`` jobs)."""
        with self._lock:
            self._fault_begun = True
            self._lock.notify_all()

    def fault_over(self) -> None:
        with self._lock:
            self._fault_over = True
            self._lock.notify_all()

    def finish(self, timeout_s: float = 300) -> StreamOutcome:
        """Waits for the submitters and every waiter; returns what they saw."""
        self.fault_over()
        deadline = time.monotonic() + timeout_s
        for thread in self._submitters:
            thread.join(timeout=max(1.0, deadline - time.monotonic()))
            assert not thread.is_alive(), "a submitter did not finish"
        for future in list(self._waits):
            future.result(timeout=max(1.0, deadline - time.monotonic()))
        self._waiters.shutdown()
        return self.outcome

    def _submit_loop(self) -> None:
        while True:
            with self._lock:
                # Gates, so that the stream neither runs ahead of the fault nor turns a long
                # fault into a long stream: ``before`` jobs, then (once the fault has begun) at
                # most ``during`` more until it is over.
                self._lock.wait_for(lambda: self._fault_over or (
                    len(self.outcome.accepted) < self.before) or (
                    self._fault_begun and self._accepted_during < self.during))
                if self._fault_over and self._accepted_after >= self.after:
                    return
                n = self._next
                self._next += 1
            try:
                handle = self.submit(n)
            except InfermqError as e:
                with self._lock:
                    self.outcome.refused[type(e).__name__] += 1
                    self._lock.notify_all()
                time.sleep(0.05)  # a refused client retries after a pause, not in a spin
                continue
            except Exception as e:  # noqa: BLE001 - an untyped refusal fails the case
                with self._lock:
                    self.outcome.untyped.append(f"{type(e).__name__}: {e}")
                    self._lock.notify_all()
                time.sleep(0.05)
                continue
            with self._lock:
                self.outcome.accepted.append(self.job_id(handle))
                if self._fault_over:
                    self._accepted_after += 1
                elif self._fault_begun:
                    self._accepted_during += 1
                self._waits.append(self._waiters.submit(self._wait_one, handle))
                self._lock.notify_all()

    def _wait_one(self, handle: H) -> None:
        try:
            answer = self.wait(handle)
        except Exception as e:  # noqa: BLE001 - recorded: the case asserts none
            answer = f"{type(e).__name__}: {e}"
        with self._lock:
            self.outcome.answers[self.job_id(handle)] = answer


def summary(name: str, outcome: StreamOutcome, done: dict[str, int],
            result_keys: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One line of the chaos report: per fault, what was accepted, done, done twice, refused."""
    return {
        "case": name,
        "accepted": len(outcome.accepted),
        "done": sum(1 for job_id in outcome.accepted if done.get(job_id, 0) >= 1),
        "done_twice": sum(1 for job_id in outcome.accepted if done.get(job_id, 0) > 1),
        "refused_typed": dict(outcome.refused),
        "refused_untyped": len(outcome.untyped),
        "waiters_answered": sum(1 for a in outcome.answers.values() if a == "done"),
        "result_keys_in_redis": result_keys,
        **(extra or {}),
    }


@dataclass
class SseReader:
    """One SSE client of a job that reconnects with ``Last-Event-ID`` whenever its stream
    breaks, until the job's final status; keeps every event it got, in order."""

    base_url: str
    job_id: str
    events: list[dict[str, str]] = field(default_factory=list)
    reconnects: int = 0
    connected: threading.Event = field(default_factory=threading.Event)
    error: str | None = None

    def run(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            last = next((e["id"] for e in reversed(self.events) if "id" in e), None)
            headers = {"Last-Event-ID": last} if last else {}
            try:
                with httpx.stream("GET", f"{self.base_url}/v1/jobs/{self.job_id}/events",
                                  headers=headers, timeout=timeout_s) as response:
                    self.connected.set()
                    if self._read(response.iter_lines()):
                        return
            except httpx.HTTPError:
                pass
            self.reconnects += 1
        self.error = f"job {self.job_id}: no final status within {timeout_s} s"

    def _read(self, lines: Iterator[str]) -> bool:
        current: dict[str, str] = {}
        for line in lines:
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                current[name] = value
                continue
            if current:
                self.events.append(current)
                if current.get("event") == "status" and current["data"] in (
                        '{"status":"done"}', '{"status":"failed"}', '{"status":"dead"}'):
                    return True
                current = {}
        return False

    def text(self) -> str:
        import json

        return "".join(json.loads(e["data"])["text"] for e in self.events
                       if e.get("event") == "token")
