"""What a worker process holds: one engine and one batcher per model, and the job runner.

Engines are loaded and warmed up before the worker consumes its first message (Celery's
``worker_init``), so no job waits on a cold model inside a task slot.
"""

from __future__ import annotations

import logging
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
        """Loads, warms up and starts a batcher for every model."""
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
        for spec in self.specs:
            engine = make_engine(spec, self.settings)
            log.info("loading model %s (%s engine)", spec.name, spec.engine)
            try:
                engine.load()
                engine.warm_up()
            except Exception:
                if metrics is not None:
                    metrics.set_state(spec.name, "FAILED")
                raise
            hooks = metrics.batcher_hooks(spec.name) if metrics is not None else None
            batcher = Batcher(engine, spec.max_batch_size, spec.max_wait_ms, hooks=hooks)
            batcher.start()
            self.batchers[spec.name] = batcher
            if metrics is not None:
                metrics.set_state(spec.name, "READY")
            log.info("model %s is ready", spec.name)
        embed = self.embedder()
        if embed is not None:
            self.runner.cache.use_embedder(embed)
            log.info("semantic cache tier on")

    def embedder(self) -> Callable[[list[str]], np.ndarray] | None:
        """Texts to embeddings with the first real embedding model served here, through its
        batcher; None when there is none (the test and noop engines' vectors mean nothing).
        The semantic cache tier and the router task need one."""
        for spec in self.specs:
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
