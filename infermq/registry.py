"""The model registry: which models serve which task types, on which engine, at what memory cost.

Read from a TOML file shipped with the package (``infermq/models.toml``) or the one that
``INFERMQ_REGISTRY_PATH`` names. Pure data: no I/O beyond reading that file.
"""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infermq.errors import ConfigError, UnknownModel, UnknownTaskType
from infermq.jobs import TaskType

SHIPPED_REGISTRY = Path(__file__).with_name("models.toml")

EngineName = Literal["torch", "paged", "vllm", "noop", "test", "openai"]


class RemoteEndpoint(BaseModel):
    """Where an ``openai`` engine model is served: an OpenAI-compatible HTTP endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(pattern=r"^https?://", description="up to and including /v1")
    model: str = Field(min_length=1, description="the model name the server knows")
    api_key_env: str | None = Field(
        default=None, description="environment variable holding the API key (never the key)"
    )
    timeout_s: float = Field(default=30.0, gt=0, description="one HTTP attempt")
    max_concurrency: int = Field(default=8, ge=1, description="requests in flight at once")
    max_retries: int = Field(default=2, ge=0, description="retries after the first attempt")
    backoff_s: float = Field(default=0.5, ge=0, description="first retry's wait; doubles")


class ModelSpec(BaseModel):
    """One model as the registry describes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    task_types: tuple[TaskType, ...]
    engine: EngineName
    source: str = "none"
    revision: str = "0"
    memory_mib: int = Field(ge=0)
    load_priority: int = Field(
        default=0, description="higher loads first, at worker start and when several models' "
        "jobs wait, within the memory budget"
    )
    max_batch_size: int = Field(default=32, ge=1)
    kv_cache_mib: int | None = Field(
        default=None, ge=1, description="the paged engine's KV arena (counted in memory_mib); "
        "its default is 64 MiB"
    )
    max_wait_ms: float = Field(default=5.0, ge=0)
    slots: int | None = Field(
        default=None, ge=1, description="jobs a worker serving this model holds (its "
        "worker_slots, when --slots and INFERMQ_WORKER_SLOTS do not say); default: the paged "
        "engine's max_num_seqs plus a margin (wanted_slots), the worker's default otherwise"
    )
    size_class: Literal["small", "large"] = "small"
    cacheable: bool = True
    canary_of: str | None = Field(
        default=None, description="the model this one takes a canary slice of routed jobs from"
    )
    traffic_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of canary_of's routed jobs sent here"
    )
    remote: RemoteEndpoint | None = Field(
        default=None, description="the endpoint of an engine = \"openai\" model"
    )
    latency_sla_s: float | None = Field(
        default=None, gt=0, description="submit-to-result time the model promises: the latency "
        "alert fires at 20 % over it (deploy/prometheus/alerts.yaml)"
    )
    max_backlog: int = Field(
        default=1000, ge=1, description="jobs waiting in the model's queues beyond which the "
        "backlog alert fires and KEDA adds a worker"
    )
    min_replicas: int = Field(
        default=1, ge=0, description="workers kept for this model on Kubernetes; 0 lets KEDA "
        "scale it to zero when its queues are empty (its first job then waits for a cold start)"
    )

    def wanted_slots(self) -> int | None:
        """The jobs a worker serving this model should hold, None when the worker's default
        does: ``slots`` if given; for the paged engine its ``max_num_seqs`` (the registry's
        ``max_batch_size``) plus a quarter more (at least 4), so that a full running set
        still leaves waiting jobs for the scheduler to choose among by priority."""
        if self.slots is not None:
            return self.slots
        if self.engine == "paged":
            return self.max_batch_size + max(4, self.max_batch_size // 4)
        return None

    @model_validator(mode="after")
    def _remote_only_with_openai(self) -> ModelSpec:
        if (self.engine == "openai") != (self.remote is not None):
            raise ValueError(
                f"model {self.name!r}: engine = \"openai\" and a [models.{self.name}.remote] "
                "table (base_url, model) go together"
            )
        if self.name == "auto":
            raise ValueError("no model may be named 'auto': it marks a job the router places")
        return self

    @model_validator(mode="after")
    def _generation_on_the_paged_engine(self) -> ModelSpec:
        if self.engine == "torch" and TaskType.GENERATE in self.task_types:
            raise ValueError(
                f"model {self.name!r}: the torch engine serves embed and classify only; "
                "generate models use engine = \"paged\" (its kv_cache_mib counts in memory_mib)"
            )
        return self

    @model_validator(mode="after")
    def _share_only_with_canary(self) -> ModelSpec:
        if (self.canary_of is None) != (self.traffic_share == 0.0):
            raise ValueError(
                f"model {self.name!r}: canary_of and a traffic_share > 0 go together "
                f"(canary_of={self.canary_of!r}, traffic_share={self.traffic_share})"
            )
        return self


class TaskTypePolicy(BaseModel):
    """How one task type is served: its default model and its cache policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_model: str
    cacheable: bool = True
    cache_ttl_s: int = Field(default=24 * 3600, ge=1)
    cache_max_entries: int = Field(default=100_000, ge=1)
    cache_sampled: bool = Field(
        default=False, description="cache generate jobs with temperature > 0 (keyed by seed)"
    )
    semantic_threshold: float = Field(default=0.85, ge=0, le=1)


class Registry(BaseModel):
    """Every model and task type policy, checked for consistency when loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelSpec]
    task_types: dict[TaskType, TaskTypePolicy]

    @model_validator(mode="after")
    def _defaults_serve_their_task(self) -> Registry:
        for task, policy in self.task_types.items():
            spec = self.models.get(policy.default_model)
            if spec is None or task not in spec.task_types:
                raise ValueError(
                    f"task type {task} names default model {policy.default_model!r}, "
                    f"which is not a model serving {task}"
                )
        return self

    @model_validator(mode="after")
    def _canaries_shadow_a_primary(self) -> Registry:
        shares: dict[str, float] = {}
        for spec in self.models.values():
            if spec.canary_of is None:
                continue
            primary = self.models.get(spec.canary_of)
            if primary is None or primary.canary_of is not None:
                raise ValueError(
                    f"model {spec.name!r} is a canary of {spec.canary_of!r}, "
                    "which is not a (non-canary) model of the registry"
                )
            if not set(spec.task_types) >= set(primary.task_types):
                raise ValueError(
                    f"canary {spec.name!r} must serve every task type of {primary.name!r}"
                )
            shares[primary.name] = shares.get(primary.name, 0.0) + spec.traffic_share
        over = {name: share for name, share in shares.items() if share > 1.0}
        if over:
            raise ValueError(f"canary traffic shares add up to more than 1: {over}")
        return self

    def canaries_of(self, name: str) -> list[ModelSpec]:
        """The canaries that take a slice of ``name``'s routed jobs, in registry order."""
        return [spec for spec in self.models.values() if spec.canary_of == name]

    def routable_models(
        self, task_type: TaskType, size_class: str | None = None
    ) -> list[ModelSpec]:
        """Models the router may choose for ``task_type`` (canaries only get their slice).

        The task type's default model comes first, then the others in registry order.
        """
        policy = self.task_types.get(task_type)
        default = policy.default_model if policy else None
        specs = [
            spec
            for spec in self.models.values()
            if task_type in spec.task_types
            and spec.canary_of is None
            and (size_class is None or spec.size_class == size_class)
        ]
        return sorted(specs, key=lambda spec: spec.name != default)

    def choose_model(self, task_type: TaskType, model: str | None) -> ModelSpec:
        """The model a job of ``task_type`` runs on: the one asked for, else the default.

        Raises:
            UnknownTaskType: no model serves ``task_type``.
            UnknownModel: ``model`` is not in the registry or does not serve ``task_type``.
        """
        policy = self.task_types.get(task_type)
        if policy is None:
            known = ", ".join(sorted(self.task_types))
            raise UnknownTaskType(f"no model serves task type {task_type!r}; known: {known}")
        name = model or policy.default_model
        spec = self.models.get(name)
        if spec is None or task_type not in spec.task_types:
            serving = ", ".join(
                sorted(n for n, m in self.models.items() if task_type in m.task_types)
            )
            raise UnknownModel(
                f"model {name!r} does not serve {task_type}; models that do: {serving}"
            )
        return spec

    def queues(self) -> list[tuple[TaskType, str]]:
        """Every (task type, model) pair, one queue each."""
        return [(t, name) for name, spec in self.models.items() for t in spec.task_types]


def parse_registry(data: dict[str, object], origin: str = "<registry>") -> Registry:
    """Builds a registry from decoded TOML.

    Raises:
        ConfigError: the data does not describe a consistent registry.
    """
    try:
        models = {
            name: {**spec, "name": name}
            for name, spec in dict(data.get("models", {})).items()  # type: ignore[call-overload]
        }
        return Registry.model_validate({"models": models, "task_types": data.get("task_types", {})})
    except ValidationError as e:
        raise ConfigError(f"model registry {origin} is invalid: {e}") from e


@lru_cache(maxsize=8)
def load_registry(path: Path | None = None) -> Registry:
    """The registry at ``path``, or the one shipped with infermq.

    Raises:
        ConfigError: the file is missing, not TOML, or inconsistent.
    """
    path = path or SHIPPED_REGISTRY
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(
            f"cannot read the model registry {path}: {e}; fix INFERMQ_REGISTRY_PATH"
        ) from e
    return parse_registry(data, str(path))
