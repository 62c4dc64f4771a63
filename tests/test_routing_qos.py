"""QoS-weighted choice: the seeds' formula, error cooldowns, fallbacks; metrics aggregation."""

from __future__ import annotations

import pytest

from infermq.errors import NoEligibleModel
from routing.metrics import ModelMetrics, ModelMetricsSnapshot, aggregate_snapshots
from routing.qos import ErrorCooldowns, QosPolicy, QosWeights, choose_by_qos, qos_weight

NOW_S = 1_000.0


def metrics(model: str, **overrides: object) -> ModelMetrics:
    values: dict[str, object] = {
        "model": model, "latency_p50_s": 0.5, "latency_p99_s": 1.0,
        "throughput_jobs_per_s": 10.0, "queue_depth": 0, "gpu_util": 0.5, "cpu_util": 0.2,
        "memory_fraction": 0.4, "error_rate": 0.0, "updated_at_s": NOW_S,
    }
    values.update(overrides)
    return ModelMetrics(**values)  # type: ignore[arg-type]


def test_weight_follows_the_seed_formula() -> None:
    # Given latency 0.5 s, throughput 10 of a best 20 jobs/s, resource usage 0.5 (GPU)
    m = metrics("a")
    # Then w = 0.5/0.5 + 0.3*10/20 + 0.2/0.5
    assert qos_weight(m, 20.0, QosPolicy()) == pytest.approx(1.0 + 0.15 + 0.4)


def test_weights_are_configurable_and_usage_is_floored() -> None:
    m = metrics("a", gpu_util=0.0, cpu_util=0.01, memory_fraction=0.02)
    policy = QosPolicy(weights=QosWeights(latency=1.0, throughput=0.0, resource=0.1))
    assert qos_weight(m, 10.0, policy) == pytest.approx(1.0 / 0.5 + 0.1 / 0.05)


def test_choice_takes_the_highest_weight_and_orders_fallbacks() -> None:
    # Given a fast model, a slow one, and a busy one
    live = {
        "fast": metrics("fast", latency_p50_s=0.1),
        "slow": metrics("slow", latency_p50_s=2.0),
        "busy": metrics("busy", latency_p50_s=0.5, gpu_util=1.0),
    }
    choice = choose_by_qos(["slow", "busy", "fast"], live, NOW_S)
    expected = {n: qos_weight(m, 10.0, QosPolicy()) for n, m in live.items()}
    assert choice.model == "fast"
    assert choice.tier == "ranked"
    assert choice.fallbacks == ("busy", "slow")
    assert dict(choice.weights) == pytest.approx(expected)


def test_model_over_error_budget_is_skipped_while_cooling_down() -> None:
    # Given the better model has 20 % errors (budget 5 %, cooldown 30 s)
    cooldowns = ErrorCooldowns(error_budget=0.05, cooldown_s=30.0)
    live = {"good": metrics("good", latency_p50_s=1.0),
            "flaky": metrics("flaky", latency_p50_s=0.1, error_rate=0.2)}
    # When routing now, then 29 s later with the same (stale) readings
    first = choose_by_qos(["flaky", "good"], live, NOW_S, cooldowns=cooldowns)
    later = choose_by_qos(["flaky", "good"], live, NOW_S + 29, cooldowns=cooldowns)
    # Then flaky is skipped both times and comes back after 30 s: the stale reading that
    # tripped it does not trip it again
    assert first.model == later.model == "good"
    assert "cooling down" in first.skipped["flaky"]
    assert choose_by_qos(["flaky", "good"], live, NOW_S + 30, cooldowns=cooldowns).model == "flaky"


def test_new_errors_after_a_cooldown_trip_it_again() -> None:
    cooldowns = ErrorCooldowns(error_budget=0.05, cooldown_s=30.0)
    choose_by_qos(["flaky"], {"flaky": metrics("flaky", error_rate=0.5)}, NOW_S,
                  cooldowns=cooldowns)
    fresh = {"flaky": metrics("flaky", error_rate=0.5, updated_at_s=NOW_S + 35)}
    assert choose_by_qos(["flaky"], fresh, NOW_S + 35, cooldowns=cooldowns).tier == "cooling"
    assert cooldowns.cooling_until_s("flaky", NOW_S + 35) == NOW_S + 65


def test_falls_back_when_first_choice_is_not_loaded_or_full() -> None:
    policy = QosPolicy(max_queue_depth=100)
    live = {
        "best": metrics("best", latency_p50_s=0.05, queue_depth=100),   # full
        "unloaded": metrics("unloaded", latency_p50_s=0.05, ready_instances=0),
        "ok": metrics("ok", latency_p50_s=1.0),
    }
    choice = choose_by_qos(["best", "unloaded", "stale", "ok"], live, NOW_S, policy)
    assert choice.model == "ok"
    assert choice.fallbacks == ("unloaded", "stale")
    assert choice.skipped["best"].startswith("full")
    assert choice.skipped["stale"].startswith("not loaded")


def test_stale_metrics_count_as_not_loaded_and_cold_model_is_chosen_last() -> None:
    live = {"a": metrics("a", updated_at_s=NOW_S - 60)}
    choice = choose_by_qos(["a", "b"], live, NOW_S, QosPolicy(stale_after_s=15))
    assert (choice.model, choice.tier, choice.fallbacks) == ("a", "cold", ("b",))


def test_excluded_or_full_everywhere_raises() -> None:
    live = {"a": metrics("a", queue_depth=5)}
    with pytest.raises(NoEligibleModel):
        choose_by_qos(["a", "b"], live, NOW_S, QosPolicy(max_queue_depth=5), exclude={"b"})


def snapshot(worker: str, **overrides: object) -> ModelMetricsSnapshot:
    values: dict[str, object] = {
        "worker": worker, "model": "m", "state": "READY", "taken_at_s": NOW_S, "period_s": 5.0,
        "latency_p50_s": 0.2, "latency_p99_s": 0.8, "throughput_jobs_per_s": 4.0,
        "queue_depth": 7, "gpu_util": 0.6, "cpu_util": 0.3, "memory_used_mib": 500,
        "memory_total_mib": 1000, "jobs_completed": 18, "jobs_failed": 2,
    }
    values.update(overrides)
    return ModelMetricsSnapshot(**values)  # type: ignore[arg-type]


def test_snapshots_aggregate_per_model_and_stale_ones_are_ignored() -> None:
    snaps = [
        snapshot("w1"),
        snapshot("w2", latency_p50_s=0.5, latency_p99_s=2.0, jobs_completed=6, jobs_failed=0,
                 gpu_util=0.2, queue_depth=9, taken_at_s=NOW_S - 1, state="LOADING"),
        snapshot("w3", taken_at_s=NOW_S - 100, latency_p99_s=50.0),
    ]
    wire = [ModelMetricsSnapshot.model_validate_json(s.model_dump_json()) for s in snaps]
    m = aggregate_snapshots(wire, NOW_S, stale_after_s=15)["m"]
    assert m.latency_p50_s == pytest.approx((0.2 * 18 + 0.5 * 6) / 24)
    assert m.latency_p99_s == 2.0
    assert m.throughput_jobs_per_s == 8.0
    assert m.queue_depth == 7  # the newest reading of the one queue
    assert m.gpu_util == pytest.approx(0.4)
    assert m.error_rate == pytest.approx(2 / 26)
    assert (m.instances, m.ready_instances) == (2, 1)
    assert m.resource_usage == pytest.approx(0.5)  # memory 500/1000 is the scarcest
