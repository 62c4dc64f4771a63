"""The dynamic micro-batcher: many task threads submit jobs, one thread runs them in batches.

A worker runs N Celery task threads (prefetch 1 each), so up to N jobs of one model are in
flight. Each thread calls ``Batcher.submit`` and waits on the returned future; the batcher's own
thread owns the engine and closes a batch when it holds ``max_batch_size`` inputs or when the
first request of an idle spell has waited ``max_wait_ms``. Requests left over from the last
batch run at once: they have already waited a whole batch.

Which requests form a batch is decided by ``select_batch``, pure code over plain data: the
most urgent first; only requests the engine calls compatible; inputs packed across jobs (a job
may bring many texts: the batch size counts inputs, not jobs).

The starvation rule. Urgency is the *effective* priority, which rises one level per
``aging_ms`` waited: ``priority + waited_ms / aging_ms``, ties to the oldest. Every waiting
request ages at the same rate, so the order between two of them never changes while they wait,
and a heap keyed on ``submitted_ms - priority * aging_ms`` (``urgency_key``) keeps exactly that
order. The promise: a request of priority p is taken before any request submitted more than
``(MAX_PRIORITY - p) * aging_ms`` after it, whatever that one's priority; so sustained
high-priority load delays low priority by a bounded amount instead of starving it.

What the rule covers. It orders the requests this worker holds, which is where a batch is
chosen. RabbitMQ delivers a priority queue strictly by priority, so it only reaches low
priorities because they have a band of their own at the broker (``<queue>.low``,
routing/topology.py) consumed with credits of its own (workers/low_band.py): a low job
always reaches a worker, and its wait there is bounded by the rule above.

Failures stay with their job: a batch whose engine call raises is split in halves and retried
until the request that raises is alone. Each request's ``timeout_s`` is enforced here (Celery's
time limits do nothing in the threads pool): a deadline thread fails the request's future with
``JobTimedOut`` the moment its deadline passes, whether it is waiting or running.

With ``prepare_ahead`` (the default), ``submit`` lets the engine prepare the request (tokenize
it) in the submitting thread, while the engine runs the current batch. It only pays for work
that releases the GIL: on an H100, tokenizing embed texts ahead (Rust) raised the batcher to
0.75 of the offline limit from 0.69 inline, while rendering generate prompts ahead (chat
template, Python) slowed the launch-bound decoding loop it competed with from 0.98 to 0.86; so
the torch engine prepares texts and leaves prompts to ``run_batch``.

Imports only the stdlib and the contracts, never Celery or Redis.
"""

from __future__ import annotations

import heapq
import itertools
import sys
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

from infermq.errors import EngineError, EngineInputError, InfermqError, JobTimedOut
from workers.engines.base import Engine, EngineOutput, EngineRequest
from workers.transient import TRANSIENT_ERRORS

GIL_SWITCH_INTERVAL_S = 1e-4
DEFAULT_AGING_MS = 1000.0
"""A priority-1 request overtakes fresh priority-9 ones after 8 s in the worker: well past a
normal batch wait, short against a request's default timeout."""
MAX_PRIORITY = 9


class BatcherHooks:
    """No-op hooks, called on the batcher thread; subclass and override what you need.

    A test holds the engine by blocking in ``before_batch`` (on a ``threading.Event``) and
    observes batch sizes; the worker records metrics. A hook that raises fails the batch's
    requests like an engine error would.
    """

    def before_batch(self, batch: Sequence[EngineRequest]) -> None:
        """Called before every engine call, bisection retries included."""

    def after_step(self, batch: Sequence[EngineRequest], step: int) -> None:
        """Called by a generating engine after each decoding step (0-based)."""

    def after_batch(self, batch: Sequence[EngineRequest], outputs: Sequence[EngineOutput]) -> None:
        """Called after every engine call that returned, with its outputs in order."""


@dataclass(order=True)
class PendingRequest:
    """A submitted request as the selection sees it, ordered by ``urgency_key``."""

    sort_key: tuple[float, int]
    request: EngineRequest = field(compare=False)
    future: Future[EngineOutput] = field(compare=False)
    inputs: int = field(compare=False, default=1)


def urgency_key(priority: int, submitted_ms: float, sequence: int,
                aging_ms: float | None) -> tuple[float, int]:
    """The heap key of a request (smaller is more urgent): effective priority, then arrival.

    With ``aging_ms`` None priority is strict: ``(-priority, sequence)``. Otherwise the key is
    the time at which a request of priority 0 would have the same effective priority now.
    """
    if aging_ms is None:
        return (-priority, sequence)
    return (submitted_ms - priority * aging_ms, sequence)


def effective_priority(priority: int, waited_ms: float, aging_ms: float) -> int:
    """The priority a request has earned by waiting, one level per ``aging_ms``, at most 9."""
    return min(MAX_PRIORITY, priority + int(waited_ms // aging_ms))


def select_batch(
    pending: list[PendingRequest],
    max_inputs: int,
    compatibility_key: Callable[[EngineRequest], Hashable],
    max_scanned: int | None = None,
) -> list[PendingRequest]:
    """Takes the next batch out of the heap ``pending`` (which it modifies) and returns it.

    The most urgent request (the heap's order: see ``urgency_key``) leads; it is taken even when it
    alone brings more than ``max_inputs`` inputs. Then requests compatible with it are taken
    in urgency order while their inputs fit. At most ``max_scanned`` requests are looked at
    (default 4 × ``max_inputs``), so a heap full of incompatible work costs bounded time;
    what is looked at and not taken goes back. Requests whose future is already done (timed
    out, cancelled) are dropped.
    """
    limit = max_scanned if max_scanned is not None else 4 * max_inputs
    batch: list[PendingRequest] = []
    passed: list[PendingRequest] = []
    batch_key: Hashable = None
    taken_inputs = scanned = 0
    while pending and scanned < limit and taken_inputs < max_inputs:
        item = heapq.heappop(pending)
        if item.future.done():
            continue
        scanned += 1
        key = compatibility_key(item.request)
        if not batch:
            batch_key = key
        elif key != batch_key or taken_inputs + item.inputs > max_inputs:
            passed.append(item)
            continue
        batch.append(item)
        taken_inputs += item.inputs
    for item in passed:
        heapq.heappush(pending, item)
    return batch


def settle_future(future: Future[EngineOutput], output: EngineOutput | None,
            error: BaseException | None) -> None:
    """Sets a future's outcome unless the deadline thread got there first."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(output)  # type: ignore[arg-type]
    except InvalidStateError:
        pass


def _as_job_error(request: EngineRequest, error: BaseException) -> BaseException:
    # A service the engine talks to that blipped is not the input's fault: it stays transient
    # (the delivery runs again, workers/transient.py) instead of failing the job for good.
    if isinstance(error, (InfermqError, *TRANSIENT_ERRORS)):
        return error
    failure = EngineInputError(
        f"job {request.job_id}: the engine failed on its input: {type(error).__name__}: {error}")
    failure.__cause__ = error
    return failure


class Batcher:
    """Runs one engine's requests in priority-ordered, size- or time-closed batches.

    Thread-safe ``submit``; one internal thread calls the engine, another enforces deadlines.
    """

    def __init__(self, engine: Engine, max_batch_size: int, max_wait_ms: float,
                 hooks: BatcherHooks | None = None,
                 aging_ms: float | None = DEFAULT_AGING_MS,
                 clock_ms: Callable[[], float] | None = None,
                 prepare_ahead: bool = True) -> None:
        if max_batch_size < 1 or max_wait_ms < 0 or (aging_ms is not None and aging_ms <= 0):
            raise EngineError(
                f"max_batch_size must be >= 1, max_wait_ms >= 0 and aging_ms > 0 or None, got "
                f"{max_batch_size}, {max_wait_ms} and {aging_ms}")
        self.aging_ms = aging_ms
        self.prepare_ahead = prepare_ahead and not engine.supports_continuous_batching
        # The clock that ages requests; a test passes its own to age them without waiting.
        self._clock_ms = clock_ms or (lambda: time.monotonic() * 1000)
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.hooks = hooks or BatcherHooks()
        self.engine_calls = 0
        self._pending: list[PendingRequest] = []
        self._pending_inputs = 0
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._window_start: float | None = None
        self._accepting = False
        self._stopping = False
        self._running_batch: Sequence[EngineRequest] = ()
        self._deadlines: list[tuple[float, int, EngineRequest, Future[EngineOutput]]] = []
        self._deadline_wakeup = threading.Condition(threading.Lock())
        self._deadlines_compact_at = 4096
        self._deadline_stop = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Starts the batcher and deadline threads; the engine must already be loaded.

        For an engine that launches GPU work, also lowers the interpreter's GIL switch interval
        to ``GIL_SWITCH_INTERVAL_S``: on a GPU the batcher thread is busy in Python (launching
        kernels) and holds the GIL; with the default 5 ms, each of the task threads woken by a
        finished batch waits about 5 ms for the GIL before it can hand over its next job, so
        256 slots need over a second to refill the queue and the next batches run half empty
        (measured on an H100). Elsewhere the short interval only costs CPU: the task threads
        take the GIL from each other every 0.1 ms (bench/pipeline_overhead.py).
        """
        if self.engine.launches_gpu_work and sys.getswitchinterval() > GIL_SWITCH_INTERVAL_S:
            sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.engine.set_step_hook(
            lambda step: self.hooks.after_step(self._running_batch, step))
        self._accepting = True
        self._threads = [
            threading.Thread(target=self._run_batches, name=f"batcher-{self.engine.spec.name}",
                             daemon=True),
            threading.Thread(target=self._expire_deadlines,
                             name=f"deadlines-{self.engine.spec.name}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, request: EngineRequest) -> Future[EngineOutput]:
        """Queues ``request``; the future ends with its output or its own error.

        The future fails with ``JobTimedOut`` once ``request.timeout_s`` has passed since this
        call, with ``EngineInputError`` when its input makes the engine raise.

        Raises:
            EngineError: the batcher is not started or is stopping.
        """
        if not self._accepting:
            raise EngineError(
                f"the batcher of {self.engine.spec.name} is not running: start() it first")
        now = time.monotonic()
        request.deadline_monotonic = now + request.timeout_s
        if self.prepare_ahead:
            try:
                self.engine.prepare(request)
            except Exception:  # noqa: BLE001 - run_batch redoes what prepare could not
                request.prepared = None
        future: Future[EngineOutput] = Future()
        sequence = next(self._sequence)
        with self._deadline_wakeup:
            heapq.heappush(self._deadlines, (request.deadline_monotonic, sequence, request, future))
            if len(self._deadlines) > self._deadlines_compact_at:
                # Finished requests leave the heap only when their deadline comes up; under
                # heavy load with long timeouts that is many, so drop them in bulk now and then.
                self._deadlines = [entry for entry in self._deadlines if not entry[3].done()]
                heapq.heapify(self._deadlines)
                self._deadlines_compact_at = max(4096, 2 * len(self._deadlines))
            self._deadline_wakeup.notify()
        if self.engine.supports_continuous_batching:
            self._submit_continuous(request, future)
            return future
        key = urgency_key(request.priority, self._clock_ms(), sequence, self.aging_ms)
        item = PendingRequest(key, request, future, request.input_count)
        with self._wakeup:
            heapq.heappush(self._pending, item)
            self._pending_inputs += item.inputs
            if self._window_start is None:
                self._window_start = now
            self._wakeup.notify()
        return future

    def stop(self, drain: bool = True) -> None:
        """Stops taking requests; with ``drain`` runs what is queued first, else fails it.

        Requests failed here end with ``EngineError`` (the worker does not ack them, so the
        broker redelivers them).
        """
        self._accepting = False
        with self._wakeup:
            self._stopping = True
            if not drain:
                while self._pending:
                    item = heapq.heappop(self._pending)
                    settle_future(item.future, None, EngineError(
                        f"job {item.request.job_id} was not run: the worker is stopping"))
                self._pending_inputs = 0
            self._wakeup.notify_all()
        batches, deadlines = self._threads
        batches.join()
        with self._deadline_wakeup:
            self._deadline_stop = True
            self._deadline_wakeup.notify_all()
        deadlines.join()
        self.engine.set_step_hook(None)

    @property
    def pending_count(self) -> int:
        """Requests waiting for a batch (timed-out ones included until their turn comes)."""
        with self._lock:
            return len(self._pending)

    def _next_batch(self) -> list[PendingRequest] | None:
        """Blocks until a batch is due; None when stopping with nothing left."""
        with self._wakeup:
            while True:
                if self._pending:
                    full = self._pending_inputs >= self.max_batch_size
                    window = self._window_start
                    due_at = None if window is None else window + self.max_wait_ms / 1000
                    now = time.monotonic()
                    if full or self._stopping or due_at is None or now >= due_at:
                        break
                    self._wakeup.wait(due_at - now)
                elif self._stopping:
                    return None
                else:
                    self._wakeup.wait()
            batch = select_batch(self._pending, self.max_batch_size, self.engine.compatibility_key)
            self._pending_inputs = sum(item.inputs for item in self._pending)
            # Left-overs have waited a whole batch already: they go next without a window.
            self._window_start = float("-inf") if self._pending else None
            return batch

    def _run_batches(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            live = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if live:
                self._run_or_bisect(live)

    def _run_or_bisect(self, items: list[PendingRequest]) -> None:
        items = [item for item in items if not item.future.done()]
        if not items:
            return
        requests = [item.request for item in items]
        self._running_batch = requests
        try:
            self.hooks.before_batch(requests)
            self.engine_calls += 1
            outputs = self.engine.run_batch(requests)
            if len(outputs) != len(requests):
                raise EngineError(
                    f"engine {self.engine.spec.name} returned {len(outputs)} outputs for "
                    f"{len(requests)} requests")
        except Exception as error:  # noqa: BLE001 - any engine failure is bisected to its job
            if len(items) == 1:
                settle_future(items[0].future, None, _as_job_error(requests[0], error))
                return
            middle = len(items) // 2
            self._run_or_bisect(items[:middle])
            self._run_or_bisect(items[middle:])
            return
        finally:
            self._running_batch = ()
        for item, output in zip(items, outputs, strict=True):
            if output.error is not None:
                settle_future(item.future, None, _as_job_error(item.request, output.error))
            else:
                settle_future(item.future, output, None)
        self.hooks.after_batch(requests, outputs)

    def _submit_continuous(self, request: EngineRequest, future: Future[EngineOutput]) -> None:
        future.set_running_or_notify_cancel()
        try:
            inner = self.engine.submit(request)
        except Exception as error:  # noqa: BLE001 - reported on the job's future
            settle_future(future, None, _as_job_error(request, error))
            return

        def relay(done: Future[EngineOutput]) -> None:
            error = done.exception()
            settle_future(future, None if error else done.result(),
                    _as_job_error(request, error) if error else None)

        inner.add_done_callback(relay)

    def _expire_deadlines(self) -> None:
        with self._deadline_wakeup:
            while True:
                while self._deadlines and self._deadlines[0][3].done():
                    heapq.heappop(self._deadlines)
                if self._deadline_stop:
                    return
                if not self._deadlines:
                    self._deadline_wakeup.wait()
                    continue
                deadline, _, request, future = self._deadlines[0]
                now = time.monotonic()
                if now < deadline:
                    self._deadline_wakeup.wait(deadline - now)
                    continue
                heapq.heappop(self._deadlines)
                settle_future(future, None, JobTimedOut(
                    f"job {request.job_id} ran past its timeout of {request.timeout_s:g} s in "
                    f"the worker; submit it with a larger timeout_s or a smaller input"))
                if self.engine.supports_continuous_batching:
                    self.engine.cancel(request)
