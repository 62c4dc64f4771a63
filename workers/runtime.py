"""What a worker process holds: one engine and one batcher per loaded model, and the job runner.

A worker serves a group of models (those named on its command line) within its device memory
budget. At start, the models that fit together load and warm up by ``load_priority`` before the
worker consumes its first message, so no job waits on a cold model inside a task slot. While it
runs, the others load on demand (workers/model_demand.py drives this runtime): the cold-start
scheduler (routing/coldstart.py) orders the loads, evicts the least recently used idle model
when the budget is short and retries failed loads. The worker consumes a model's queues only
while the model is READY, and gives back any message of a model that is not (``hold_model``).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

import numpy as np

from infermq.errors import ConfigError, EngineError
from infermq.jobs import TaskType
from infermq.keys import RedisKeys
from infermq.registry import ModelSpec, load_registry
from infermq.settings import Settings
from routing.coldstart import Action, ColdStartScheduler, Evict, GiveUp, InstanceState, StartLoad
from stores.connections import get_redis
from stores.database import get_engine
from stores.results import JobStateStore
from workers.batching import Batcher
from workers.engines import build_engine
from workers.engines.base import EngineOutput, EngineRequest
from workers.execution import JobRunner
from workers.runner_hooks import RunnerHooks

if TYPE_CHECKING:
    from routing.metrics import InstanceStateName
    from workers.metrics import WorkerMetrics

log = logging.getLogger(__name__)


def served_specs(settings: Settings, model_names: list[str] | None) -> list[ModelSpec]:
    """The registry's specs of the models a worker serves (all of them when None).

    Raises:
        ConfigError: a name is not in the registry.
    """
    registry = load_registry(settings.registry_path)
    names = model_names or list(registry.models)
    unknown = [n for n in names if n not in registry.models]
    if unknown:
        raise ConfigError(
            f"unknown models {unknown}; the registry has: {', '.join(registry.models)}"
        )
    return [registry.models[n] for n in names]


def sized_for(settings: Settings, specs: list[ModelSpec]) -> Settings:
    """``settings`` with ``worker_slots`` sized for the served models (the largest of their
    ``ModelSpec.wanted_slots``), unless ``--slots`` or ``INFERMQ_WORKER_SLOTS`` set it."""
    wanted = [n for n in (spec.wanted_slots() for spec in specs) if n is not None]
    if "worker_slots" in settings.model_fields_set or not wanted:
        return settings
    return settings.model_copy(update={"worker_slots": max(wanted)})


def job_state_store(settings: Settings) -> JobStateStore:
    """The Redis side of job state (hot status, results) as the worker writes it."""
    return JobStateStore(get_redis(settings), RedisKeys(settings.redis_prefix),
                         settings.result_ttl_s)


def admit_models(specs: list[ModelSpec], budget_mib: int | None) -> list[ModelSpec]:
    """The models to load at start: by ``load_priority`` (then the order given), each while it
    fits what the budget has left; ``None`` admits them all.

    At start nothing is in demand yet, so a model that does not fit evicts nobody and blocks
    nobody (a lower-priority model that fits still loads): it stays unloaded. Admitting only
    what fits together also keeps the scheduler from ever evicting at start.
    """
    ordered = sorted(specs, key=lambda spec: -spec.load_priority)
    if budget_mib is None:
        return ordered
    admitted, left_mib = [], budget_mib
    for spec in ordered:
        if spec.memory_mib <= left_mib:
            admitted.append(spec)
            left_mib -= spec.memory_mib
    return admitted


def _free_device_memory() -> None:
    """Returns an unloaded model's cached blocks to the device, when an engine imported torch
    and runs on CUDA (the test and noop engines never import it)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        gc.collect()  # tensors held by reference cycles are only freed by a collection
        torch.cuda.empty_cache()


class WorkerRuntime:
    """The models one worker serves, their batchers, and the runner of its task slots.

    Thread-safe: the scheduler is not, so the start, the demand thread and every task thread
    (``hold_model``/``release_model``) reach it under one lock, whose condition also wakes an
    eviction waiting for the last job of its model.
    """

    def __init__(self, settings: Settings, model_names: list[str] | None = None,
                 hooks: Sequence[RunnerHooks] = (),
                 metrics: WorkerMetrics | None = None) -> None:
        """``hooks`` go to the job runner (after ``metrics``, itself one); ``metrics`` also
        starts with the worker and hears model states and batches.

        Raises:
            ConfigError: a name in ``model_names`` is not in the registry.
        """
        self.settings = settings
        self.specs = served_specs(settings, model_names)
        self.specs_by_name = {spec.name: spec for spec in self.specs}
        # The models loaded at start, in load order (the rest load on demand).
        self.admitted = admit_models(self.specs, settings.device_memory_mib)
        self.scheduler = ColdStartScheduler(
            settings.device_memory_mib if settings.device_memory_mib is not None
            else sum(spec.memory_mib for spec in self.specs),
            max_attempts=settings.model_load_attempts,
            retry_backoff_s=settings.model_load_backoff_s,
        )
        self._scheduler_lock = threading.Condition()
        # Models whose loads failed ``model_load_attempts`` times in a row: not loaded again by
        # this process (their jobs wait for another worker).
        self.given_up: set[str] = set()
        # Set by a drain of the whole worker (scale-down): nothing loads any more.
        self.worker_draining = False
        self.batchers: dict[str, Batcher] = {}
        self.metrics = metrics
        self.runner = JobRunner(
            settings,
            get_engine(settings),
            job_state_store(settings),
            self.submit,
            models=self,
            hooks=[*([metrics] if metrics is not None else []), *hooks],
        )

    def start(self) -> None:
        """Loads, warms up and starts a batcher for every admitted model, as the cold-start
        scheduler orders; returns once each is READY or given up on (a failed load is retried
        after its backoff and never stops the others)."""
        if self.settings.torch_threads:
            try:
                import torch

                torch.set_num_threads(self.settings.torch_threads)
            except ImportError:
                pass
        metrics = self.metrics
        if metrics is not None:
            metrics.start()
            self.runner.audit.on_counts = metrics.cache_audited
        self._load_admitted()
        embed = self.embedder()
        if embed is not None:
            # The router and the semantic cache call it between jobs: never evicted.
            with self._scheduler_lock:
                self.scheduler.pin(str(self.embedding_model))
            if self.runner.cache.use_embedder(embed):
                log.info("semantic cache tier on")

    def _load_admitted(self) -> None:
        for spec in self.admitted:
            self.request_load(spec.name)
        while True:
            actions = self.next_actions()
            # Only loads: the admitted models fit the budget together, so nothing is evicted.
            for action in actions:
                if isinstance(action, StartLoad):
                    self.load(self.specs_by_name[action.model], action.attempt)
            if not actions:
                with self._scheduler_lock:
                    if not self.scheduler.pending_models():
                        return
                    retry_s = self.scheduler.next_retry_s()
                if retry_s is None:
                    return
                time.sleep(max(0.0, retry_s - time.monotonic()))

    # --- the scheduler, under its lock ----------------------------------------------------

    def state(self, model: str) -> InstanceState | None:
        with self._scheduler_lock:
            return self.scheduler.state(model)

    def request_load(self, model: str) -> None:
        """Asks the scheduler for ``model`` (its jobs are waiting), with its load priority."""
        spec = self.specs_by_name[model]
        with self._scheduler_lock:
            self.scheduler.request(model, spec.memory_mib, time.monotonic(),
                                   priority=spec.load_priority)

    def next_actions(self) -> list[Action]:
        """The loads to start and the models to evict now, in order. An evicted model is
        DRAINING from here on: ``hold_model`` refuses its jobs."""
        with self._scheduler_lock:
            actions = self.scheduler.next_actions(time.monotonic())
            for action in actions:
                if isinstance(action, Evict):
                    self._set_state(action.model, "DRAINING")
        return actions

    def next_retry_s(self) -> float | None:
        """When a failed load may be retried (monotonic clock); None when none waits."""
        with self._scheduler_lock:
            return self.scheduler.next_retry_s()

    def hold_model(self, model: str) -> bool:
        """Admits one job of ``model`` (True) and counts it in flight until ``release_model``,
        or refuses it (False).

        The rule: a job runs in this worker only while its model is READY here. A message for
        a model that is LOADING, DRAINING (being evicted), FAILED or not loaded, such as one
        that reached the worker from the prefetch buffer of a consumer cancelled for an
        eviction, is refused before its attempt is counted in PostgreSQL, and its task gives it
        back to RabbitMQ (``Reject(requeue=True)``) for a worker that serves the model: it is
        never run here and never failed. An admitted job keeps its model loaded: the scheduler
        evicts only idle models, and ``unload`` waits for the last one.
        """
        with self._scheduler_lock:
            if self.scheduler.state(model) != InstanceState.READY:
                return False
            self.scheduler.job_started(model, time.monotonic())
            return True

    def release_model(self, model: str) -> None:
        with self._scheduler_lock:
            self.scheduler.job_finished(model, time.monotonic())
            self._scheduler_lock.notify_all()

    # --- loading and unloading ------------------------------------------------------------

    def load(self, spec: ModelSpec, attempt: int) -> bool:
        """One load of ``spec`` that the scheduler started (``StartLoad``), reported to it; on
        success its batcher starts, then it is READY (True). A failed load is retried by the
        scheduler after its backoff, or given up on (``given_up``)."""
        self._set_state(spec.name, "LOADING")
        engine = build_engine(spec, self.settings)  # a ConfigError here is fatal, as before
        log.info("loading model %s (%s engine, attempt %d)", spec.name, spec.engine, attempt)
        try:
            engine.load()
            with self._scheduler_lock:
                self.scheduler.loaded(spec.name, time.monotonic())
            engine.warm_up()
        except Exception as exc:
            with contextlib.suppress(Exception):
                engine.unload()  # what a half-done load holds on the device
            with self._scheduler_lock:
                outcome: GiveUp | None = self.scheduler.load_failed(
                    spec.name, time.monotonic(), f"{type(exc).__name__}: {exc}")
                if outcome is not None:
                    self.given_up.add(spec.name)
                self._set_state(spec.name, "FAILED")
            log.warning("model %s failed to load (attempt %d)%s", spec.name, attempt,
                        "; giving up on it" if outcome is not None else "; will retry",
                        exc_info=True)
            return False
        hooks = (self.metrics.batcher_hooks(spec.name, spec.max_batch_size)
                 if self.metrics is not None else None)
        batcher = Batcher(engine, spec.max_batch_size, spec.max_wait_ms, hooks=hooks)
        batcher.start()
        self.batchers[spec.name] = batcher
        with self._scheduler_lock:
            # READY only once its batcher takes requests: hold_model admits jobs from here on.
            self.scheduler.warmed_up(spec.name, time.monotonic())
            self._set_state(spec.name, "DRAINING" if self.worker_draining else "READY")
        return True

    def unload(self, model: str) -> None:
        """Carries out an eviction (``Evict``) once the model's queues are no longer consumed:
        waits for its jobs in flight, stops its batcher, unloads the engine, frees its device
        memory, then tells the scheduler the memory is free."""
        with self._scheduler_lock:
            self._scheduler_lock.wait_for(
                lambda: self.scheduler.instances[model].in_flight == 0)
        batcher = self.batchers.pop(model)
        batcher.stop(drain=True)
        batcher.engine.unload()
        del batcher
        _free_device_memory()
        with self._scheduler_lock:
            self.scheduler.drained(model)
        self._set_state(model, None)

    def begin_worker_drain(self) -> None:
        """The whole worker is being drained (scale-down): its models report DRAINING and
        nothing loads any more. Their scheduler states stay: the jobs the worker already holds
        still run here, as a drain promises, before it stops."""
        with self._scheduler_lock:
            self.worker_draining = True
            for model, instance in self.scheduler.instances.items():
                if instance.state in (InstanceState.LOADING, InstanceState.READY):
                    self._set_state(model, "DRAINING")

    def _set_state(self, model: str, state: InstanceStateName | None) -> None:
        """Publishes a model's state (None: unloaded) and logs it: the worker's log is the
        history of its models' states."""
        log.info("model %s is now %s", model, state or "unloaded")
        if self.metrics is not None:
            if state is None:
                self.metrics.forget(model)
            else:
                self.metrics.set_state(model, state)

    @property
    def ready_specs(self) -> list[ModelSpec]:
        """The models this worker serves now (READY), in the order they were named."""
        return [spec for spec in self.specs if self.state(spec.name) == InstanceState.READY]

    @property
    def embedding_model(self) -> str | None:
        """The first real embedding model served here (READY); None when there is none (the
        test and noop engines' vectors mean nothing). The semantic cache tier and the router
        task need one."""
        for spec in self.ready_specs:
            if TaskType.EMBED in spec.task_types and spec.engine in ("torch", "vllm"):
                return spec.name
        return None

    def embedder(self) -> Callable[[list[str]], np.ndarray] | None:
        """Texts to embeddings with ``embedding_model``, through its batcher."""
        name = self.embedding_model
        if name is None:
            return None

        def embed(texts: list[str]) -> np.ndarray:
            request = EngineRequest(job_id="embedder", task_type=TaskType.EMBED,
                                    input=list(texts), priority=9)
            return np.asarray(self.submit(name, request).result().output, dtype=np.float32)

        return embed

    def submit(self, model: str, request: EngineRequest) -> Future[EngineOutput]:
        """Queues ``request`` on ``model``'s batcher.

        Raises:
            EngineError: the model is not loaded in this worker, or its batcher is stopping.
        """
        batcher = self.batchers.get(model)
        if batcher is None:
            raise EngineError(f"model {model} is not loaded in this worker")
        return batcher.submit(request)

    def stop(self) -> None:
        """Finishes what the batchers hold, then unloads the engines."""
        for batcher in self.batchers.values():
            batcher.stop(drain=True)
        self.batchers.clear()
        self.runner.commits.close()
        if self.metrics is not None:
            self.metrics.stop()
