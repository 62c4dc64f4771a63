"""Model engines: one module per runtime, chosen by the registry's ``engine`` field.

``build_engine`` is the one place that maps a ``ModelSpec`` and the worker's settings to an
engine; the runtime's heavy imports (torch, vllm) happen only when it is chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from infermq.errors import ConfigError
from infermq.keys import RedisKeys
from infermq.registry import ModelSpec
from workers.engines.base import Engine, EngineOutput, EngineRequest
from workers.engines.sources import prepare_model

if TYPE_CHECKING:
    from infermq.settings import Settings

__all__ = ["Engine", "EngineOutput", "EngineRequest", "build_engine", "prepare_model"]


def build_engine(spec: ModelSpec, settings: Settings) -> Engine:
    """A new, unloaded engine for ``spec``, configured from ``settings``.

    Raises:
        ConfigError: the registry names an engine this function does not build, or the
            scripted test engine without ``test_hooks``.
        EngineUnavailable: the vllm engine was chosen and vLLM is not installed (on ``load``).
    """
    if spec.engine == "test":
        if not settings.test_hooks:
            raise ConfigError(
                f"model {spec.name} uses the test engine, which needs INFERMQ_TEST_HOOKS=true"
            )
        from stores.connections import get_redis
        from workers.engines.scripted import ScriptedEngine

        return ScriptedEngine(spec, get_redis(settings), RedisKeys(settings.redis_prefix))
    if spec.engine == "openai":
        from workers.engines.openai_remote import OpenAIRemoteEngine

        return OpenAIRemoteEngine(spec)
    if spec.engine == "noop":
        from workers.engines.noop import NoopEngine

        return NoopEngine(spec)
    if spec.engine == "torch":
        import torch

        from workers.engines.torch_engine import TorchEngine

        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        return TorchEngine(spec, settings.models_dir, settings.device, settings.torch_dtype)
    if spec.engine == "paged":
        from workers.engines.paged.engine import PagedEngine

        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        return PagedEngine(spec, settings.models_dir, settings.device, settings.torch_dtype,
                           cuda_graphs=settings.cuda_graphs)
    if spec.engine == "vllm":
        from workers.engines.vllm import VllmEngine

        return VllmEngine(spec, settings.models_dir, settings.torch_dtype)
    raise ConfigError(
        f"model {spec.name} names engine {spec.engine!r}, which build_engine does not build; "
        "known: torch, paged, vllm, noop, openai, test")
