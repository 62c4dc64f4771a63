"""Task-aware choice: class to model size, QoS among that size, fallbacks, canary slices."""

from __future__ import annotations

import math

import pytest

from infermq.errors import ConfigError, NoEligibleModel, UnknownRequestClass
from infermq.registry import Registry, load_registry, parse_registry
from routing.canary import split_canary
from routing.metrics import ModelMetrics
from routing.qos import ErrorCooldowns, QosPolicy
from routing.request_classes import choose_model_for_class

NOW_S = 500.0


def registry_with_canary(share: float = 0.10) -> Registry:
    base = load_registry()
    data: dict[str, object] = {
        "task_types": {t: p.model_dump() for t, p in base.task_types.items()},
        "models": {
            **{n: m.model_dump(exclude={"name"}) for n, m in base.models.items()},
            "smollm2-next": {"task_types": ["generate"], "engine": "paged", "memory_mib": 700,
                             "canary_of": "smollm2", "traffic_share": share},
        },
    }
    return parse_registry(data)


def live(model: str, **overrides: object) -> ModelMetrics:
    values: dict[str, object] = {
        "model": model, "latency_p50_s": 0.3, "latency_p99_s": 0.9,
        "throughput_jobs_per_s": 5.0, "queue_depth": 0, "gpu_util": 0.5, "cpu_util": 0.5,
        "memory_fraction": 0.5, "error_rate": 0.0, "updated_at_s": NOW_S,
    }
    values.update(overrides)
    return ModelMetrics(**values)  # type: ignore[arg-type]


def test_shipped_registry_has_a_small_and_a_large_generation_model() -> None:
    registry = load_registry()
    sizes = {m.name: m.size_class for m in registry.routable_models("generate")}  # type: ignore[arg-type]
    assert sizes == {"smollm2": "small", "gpt2-large-random": "large"}
    assert registry.models["gpt2-large-random"].memory_mib > registry.models["smollm2"].memory_mib


@pytest.mark.parametrize(("request_class", "model"), [
    ("greeting", "smollm2"), ("faq", "smollm2"), ("short_classification", "smollm2"),
    ("hard", "gpt2-large-random"),
])
def test_small_classes_go_small_and_hard_goes_large(request_class: str, model: str) -> None:
    decision = choose_model_for_class(request_class, load_registry(), job_id="j1")
    assert (decision.model, decision.arm, decision.task_type) == (model, "primary", "generate")
    assert request_class in decision.reason


def test_hard_task_waits_for_a_cold_large_model_rather_than_going_small() -> None:
    metrics = {"smollm2": live("smollm2")}  # the large model has no READY instance
    decision = choose_model_for_class("hard", load_registry(), job_id="j", metrics=metrics,
                                      now_s=NOW_S)
    assert decision.model == "gpt2-large-random"
    assert "cold start" in decision.reason
    assert decision.fallbacks == ("smollm2",)


def test_hard_task_falls_back_to_small_when_large_is_cooling_down() -> None:
    metrics = {"smollm2": live("smollm2"), "gpt2-large-random": live("gpt2-large-random",
                                                                      error_rate=0.5)}
    decision = choose_model_for_class("hard", load_registry(), job_id="j", metrics=metrics,
                                      now_s=NOW_S, cooldowns=ErrorCooldowns())
    assert decision.model == "smollm2"
    assert "none can take it" in decision.reason
    assert decision.fallbacks == ("gpt2-large-random",)


def test_excluding_the_only_models_raises() -> None:
    with pytest.raises(NoEligibleModel):
        choose_model_for_class("faq", load_registry(), job_id="j", metrics={}, now_s=NOW_S,
                               exclude={"smollm2", "gpt2-large-random"},
                               policy=QosPolicy())


def test_without_metrics_an_excluded_model_is_passed_over() -> None:
    decision = choose_model_for_class("faq", load_registry(), job_id="j", exclude={"smollm2"})
    assert decision.model == "gpt2-large-random"
    assert "none can take it" in decision.reason


def test_canary_with_errors_in_its_live_metrics_is_skipped() -> None:
    registry = registry_with_canary(1.0)
    metrics = {"smollm2": live("smollm2"), "smollm2-next": live("smollm2-next", error_rate=0.3)}
    decision = choose_model_for_class("greeting", registry, job_id="j", metrics=metrics,
                                      now_s=NOW_S)
    assert (decision.model, decision.arm) == ("smollm2", "primary")
    assert "canary smollm2-next skipped" in decision.reason


def test_unknown_class_names_the_known_ones() -> None:
    with pytest.raises(UnknownRequestClass, match="greeting"):
        choose_model_for_class("poetry", load_registry(), job_id="j")


def test_canary_takes_its_share_of_2000_fixed_ids_within_3_sigma() -> None:
    registry = registry_with_canary(0.10)
    n, share = 2000, 0.10
    arms = [choose_model_for_class("greeting", registry, job_id=f"job-{i:05d}") for i in range(n)]
    canary = sum(1 for d in arms if d.arm == "canary")
    assert all(d.model == "smollm2-next" for d in arms if d.arm == "canary")
    assert abs(canary - n * share) <= 3 * math.sqrt(n * share * (1 - share))
    # the split is by job id: the same id always takes the same arm
    assert [choose_model_for_class("greeting", registry, job_id=f"job-{i:05d}").arm
            for i in range(50)] == [d.arm for d in arms[:50]]


def test_canary_never_touches_other_primaries_and_is_skipped_while_cooling() -> None:
    registry = registry_with_canary(1.0)
    assert choose_model_for_class("hard", registry, job_id="x").arm == "primary"
    cooldowns = ErrorCooldowns()
    cooldowns.observe(live("smollm2-next", error_rate=0.9), NOW_S)
    decision = choose_model_for_class("faq", registry, job_id="x", metrics={"smollm2": live(
        "smollm2")}, now_s=NOW_S, cooldowns=cooldowns)
    assert (decision.model, decision.arm) == ("smollm2", "primary")
    assert split_canary("x", "smollm2", registry).arm == "canary"


def test_canary_must_shadow_a_model_with_the_same_task_types() -> None:
    base = registry_with_canary()
    data = {"task_types": {t: p.model_dump() for t, p in base.task_types.items()},
            "models": {n: m.model_dump(exclude={"name"}) for n, m in base.models.items()}}
    data["models"]["smollm2-next"]["canary_of"] = "nope"  # type: ignore[index]
    with pytest.raises(ConfigError, match="canary"):
        parse_registry(data)
    data["models"]["smollm2-next"].update(canary_of="smollm2", traffic_share=0.0)  # type: ignore[index]
    with pytest.raises(ConfigError, match="traffic_share"):
        parse_registry(data)
