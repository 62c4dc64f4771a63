"""What a worker process holds: one engine and one batcher per model, and the job runner.

Engines are loaded and warmed up before the worker consumes its first message, so no job waits
on a cold model inside a task slot. The cold-start scheduler (routing/coldstart.py) orders the
loads by ``load_priority`` within the device memory budget and retries failed ones; the worker
consumes only the queues of the models that end up READY.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

import numpy as np

from infermq.connections import get_redis
from infermq.database import get_engine
from infermq.errors import ConfigError
from infermq.jobs import TaskType
from infermq.keys import RedisKeys
from infermq.results import JobStateStore
from infermq.settings import Settings
from routing.coldstart import ColdStartScheduler, GiveUp, InstanceState, StartLoad
from routing.registry import ModelSpec, load_registry
from workers.batching import Batcher
from workers.engines.base import Engine, EngineOutput, EngineRequest
from workers.execution import JobRunner

if TYPE_CHECKING:
    from workers.metrics import WorkerMetrics

log = logging.getLogger(__name__)


def make_engine(spec: ModelSpec, settings: Settings) -> Engine:
    """The engine the registry names for ``spec``.

    Raises:
        ConfigError: the test engine was asked for without ``test_hooks``.
        EngineUnavailable: the engine's runtime (torch, vllm) is not installed.
    """
    if spec.engine == "test":
        if not settings.test_hooks:
            raise ConfigError(
                f"model {spec.name} uses the test engine, which needs INFERMQ_TEST_HOOKS=true"
            )
        from workers.engines.test_engine import TestEngine

        return TestEngine(spec, get_redis(settings), RedisKeys(settings.redis_prefix))
    if spec.engine == "openai":
        from workers.engines.openai_remote import OpenAIRemoteEngine

        return OpenAIRemoteEngine(spec)
    from workers.engines import build_engine

    return build_engine(spec, settings)


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


class WorkerRuntime:
    """The models one worker serves, their batchers, and the runner of its task slots."""

    def __init__(self, settings: Settings, model_names: list[str] | None = None) -> None:
        self.settings = settings
        registry = load_registry(settings.registry_path)
        names = model_names or list(registry.models)
        unknown = [n for n in names if n not in registry.models]
        if unknown:
            raise ConfigError(
                f"unknown models {unknown}; the registry has: {', '.join(registry.models)}"
            )
        self.specs = [registry.models[n] for n in names]
        # The models this worker will try to load, in load order (the rest do not fit).
        self.admitted = admit_models(self.specs, settings.device_memory_mib)
        self.scheduler = ColdStartScheduler(
            settings.device_memory_mib if settings.device_memory_mib is not None
            else sum(spec.memory_mib for spec in self.specs),
            max_attempts=settings.model_load_attempts,
            retry_backoff_s=settings.model_load_backoff_s,
        )
        self.batchers: dict[str, Batcher] = {}
        # Set by the worker entry point before start (workers/metrics.py).
        self.metrics: WorkerMetrics | None = None
        self.runner = JobRunner(
            settings,
            get_engine(settings),
            JobStateStore(get_redis(settings), RedisKeys(settings.redis_prefix),
                          settings.result_ttl_s),
            self.submit,
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
            self.runner.on_job_started = metrics.job_started
            self.runner.on_job_ended = metrics.job_ended
        self._load_admitted()
        embed = self.embedder()
        if embed is not None:
            self.runner.cache.use_embedder(embed)
            log.info("semantic cache tier on")

    def _load_admitted(self) -> None:
        scheduler = self.scheduler
        specs = {spec.name: spec for spec in self.admitted}
        for spec in self.admitted:
            scheduler.request(spec.name, spec.memory_mib, time.monotonic(),
                              priority=spec.load_priority)
        while scheduler.pending_models():
            actions = scheduler.next_actions(time.monotonic())
            # Only loads: the admitted models fit the budget together, so nothing is evicted.
            for action in actions:
                if isinstance(action, StartLoad):
                    self._load(specs[action.model], action.attempt)
            if not actions:
                retry_s = scheduler.next_retry_s()
                if retry_s is None:
                    break
                time.sleep(max(0.0, retry_s - time.monotonic()))

    def _load(self, spec: ModelSpec, attempt: int) -> None:
        """One load of ``spec``, reported to the scheduler; on success its batcher starts."""
        metrics = self.metrics
        if metrics is not None:
            metrics.set_state(spec.name, "LOADING")
        engine = make_engine(spec, self.settings)  # a ConfigError here is fatal, as before
        log.info("loading model %s (%s engine, attempt %d)", spec.name, spec.engine, attempt)
        try:
            engine.load()
            self.scheduler.loaded(spec.name, time.monotonic())
            engine.warm_up()
        except Exception as exc:
            outcome: GiveUp | None = self.scheduler.load_failed(
                spec.name, time.monotonic(), f"{type(exc).__name__}: {exc}")
            if metrics is not None:
                metrics.set_state(spec.name, "FAILED")
            log.warning("model %s failed to load (attempt %d)%s", spec.name, attempt,
                        "; giving up on it" if outcome is not None else "; will retry",
                        exc_info=True)
            return
        self.scheduler.warmed_up(spec.name, time.monotonic())
        hooks = metrics.batcher_hooks(spec.name) if metrics is not None else None
        batcher = Batcher(engine, spec.max_batch_size, spec.max_wait_ms, hooks=hooks)
        batcher.start()
        self.batchers[spec.name] = batcher
        if metrics is not None:
            metrics.set_state(spec.name, "READY")
        log.info("model %s is ready", spec.name)

    @property
    def ready_specs(self) -> list[ModelSpec]:
        """The models this worker serves (READY), in load order: only their queues are
        consumed."""
        return [spec for spec in self.admitted
                if self.scheduler.state(spec.name) == InstanceState.READY]

    def embedder(self) -> Callable[[list[str]], np.ndarray] | None:
        """Texts to embeddings with the first real embedding model served here, through its
        batcher; None when there is none (the test and noop engines' vectors mean nothing).
        The semantic cache tier and the router task need one."""
        for spec in self.ready_specs:
            if TaskType.EMBED in spec.task_types and spec.engine in ("torch", "vllm"):
                name = spec.name

                def embed(texts: list[str], name: str = name) -> np.ndarray:
                    request = EngineRequest(job_id="embedder", task_type=TaskType.EMBED,
                                            input=list(texts), priority=9)
                    return np.asarray(self.submit(name, request).result().output,
                                      dtype=np.float32)

                return embed
        return None

    def submit(self, model: str, request: EngineRequest) -> Future[EngineOutput]:
        return self.batchers[model].submit(request)

    def stop(self) -> None:
        """Finishes what the batchers hold, then unloads the engines."""
        for batcher in self.batchers.values():
            batcher.stop(drain=True)
        self.batchers.clear()
        self.runner.commits.close()
        if self.metrics is not None:
            self.metrics.stop()
