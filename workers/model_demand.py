"""On-demand model loading in a running worker: the thread that drives the cold-start scheduler.

Every ``model_demand_poll_s`` it reads how many messages are ready in each of the worker's
models' queues, both bands (a passive declare). A model that is not READY and has jobs waiting
is requested from the scheduler, with its ``load_priority``; then the thread carries out what
the scheduler decides, in its order, until it has nothing more to do for now:

- ``StartLoad``: load and warm up the model, then start consuming its queues;
- ``Evict`` (the least recently used idle model, when a requested one does not fit): stop
  consuming its queues, wait for its jobs in flight, unload it and free its memory.

Meanwhile the jobs of a model that is not READY wait in RabbitMQ; one that reached the worker
anyway is given back to it (``WorkerRuntime.hold_model``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from infermq.settings import Settings
from routing.coldstart import Action, Evict, InstanceState, StartLoad
from workers.metrics import QueueDepths
from workers.runtime import WorkerRuntime

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 120.0
"""How long a stopping worker waits for a load or eviction under way to finish."""


class QueueSwitch(Protocol):
    """Starts and stops this worker's consumers of queues (workers/consumer_queues.py)."""

    def start_consuming(self, queues: list[str]) -> bool: ...

    def stop_consuming(self, queues: list[str]) -> bool: ...


class ModelDemand:
    """Loads a worker's models when their jobs wait, evicting idle ones for them."""

    def __init__(self, settings: Settings, runtime: WorkerRuntime,
                 queues: dict[str, list[str]], switch: QueueSwitch) -> None:
        self.settings = settings
        self.runtime = runtime
        self.queues = queues
        self.switch = switch
        self._depths = QueueDepths(settings.broker_url)
        self._requested: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts the demand thread; the worker must already consume its READY models."""
        self._thread = threading.Thread(target=self._run_forever, name="model-demand",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Asks the thread to stop after what it is doing; returns at once."""
        self._stop.set()

    def join(self) -> None:
        """Stops the thread and waits for it (a load or an eviction under way finishes)."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("model demand thread still busy after %s s", JOIN_TIMEOUT_S)

    def run_once(self) -> None:
        """One period: requests the models whose jobs wait, then carries out the scheduler's
        actions until it has none left for now."""
        runtime = self.runtime
        for model, queues in self.queues.items():
            if model in runtime.given_up or runtime.state(model) == InstanceState.READY:
                self._requested.discard(model)
                continue
            waiting = sum(self._depths.ready_in_bands(queue) or 0 for queue in queues)
            if waiting:
                if model not in self._requested:
                    log.info("model %s has %d jobs waiting: loading it on demand", model,
                             waiting)
                    self._requested.add(model)
                runtime.request_load(model)
        while not self._stop.is_set():
            actions = runtime.next_actions()
            if not actions:
                return
            for action in actions:
                self._carry_out(action)

    def _carry_out(self, action: Action) -> None:
        queues = self.queues[action.model]
        if isinstance(action, StartLoad):
            spec = self.runtime.specs_by_name[action.model]
            if self.runtime.load(spec, action.attempt) and not self.switch.start_consuming(queues):
                log.warning("model %s is READY but its queues are not consumed (the worker is "
                            "draining or stopping)", action.model)
        elif isinstance(action, Evict):
            if not self.switch.stop_consuming(queues):
                # Still safe: hold_model gives back every job of a model that is not READY.
                log.warning("model %s: its queues may still be consumed while it is evicted",
                            action.model)
            self.runtime.unload(action.model)

    def _run_forever(self) -> None:
        try:
            while not self._stop.is_set() and not self.runtime.worker_draining:
                try:
                    self.run_once()
                except Exception:  # noqa: BLE001 - the next period tries again
                    log.exception("model demand: a period failed")
                self._stop.wait(self._next_wait_s())
        finally:
            self._depths.close()

    def _next_wait_s(self) -> float:
        """The poll period, shorter when a failed load may be retried before it ends."""
        wait_s = self.settings.model_demand_poll_s
        retry_s = self.runtime.next_retry_s()
        if retry_s is not None:
            wait_s = min(wait_s, max(0.0, retry_s - time.monotonic()))
        return wait_s
