"""Scaling signals fire after exactly their number of periods, with hysteresis and drain-first."""

from __future__ import annotations

import pytest

from routing.metrics import ModelMetrics
from routing.scaling import ScalingAction, ScalingSignals, ScalingThresholds


def period(**overrides: object) -> ModelMetrics:
    values: dict[str, object] = {
        "model": "m", "latency_p50_s": 0.5, "latency_p99_s": 1.0, "throughput_jobs_per_s": 5.0,
        "queue_depth": 100, "gpu_util": 0.5, "cpu_util": 0.5, "memory_fraction": 0.5,
        "error_rate": 0.0, "updated_at_s": 0.0,
    }
    values.update(overrides)
    return ModelMetrics(**values)  # type: ignore[arg-type]


def actions(signals: ScalingSignals, periods: list[ModelMetrics], instances: int = 2) -> list[str]:
    return [signals.observe(p, instances).action.value for p in periods]


@pytest.mark.parametrize("util_periods", [1, 3, 5])
def test_high_utilisation_scales_up_after_exactly_its_periods(util_periods: int) -> None:
    signals = ScalingSignals(ScalingThresholds(util_high_periods=util_periods))
    hot = period(gpu_util=0.9)
    got = actions(signals, [hot] * util_periods)
    assert got == ["hold"] * (util_periods - 1) + ["scale_up"]


def test_a_cool_period_restarts_the_count() -> None:
    signals = ScalingSignals(ScalingThresholds())
    hot, cool = period(gpu_util=0.9), period(gpu_util=0.85)  # 85 % is not over 85 %
    assert actions(signals, [hot, hot, cool, hot, hot, hot]) == ["hold"] * 5 + ["scale_up"]


def test_backlog_over_1000_scales_up_at_once_and_1000_does_not() -> None:
    signals = ScalingSignals(ScalingThresholds())
    assert actions(signals, [period(queue_depth=1000)]) == ["hold"]
    decision = signals.observe(period(queue_depth=1001), 2)
    assert decision.action == ScalingAction.SCALE_UP
    assert decision.target_instances == 3
    assert "backlog 1001 > 1000" in decision.reasons[0]


def test_latency_over_sla_plus_20_percent_scales_up() -> None:
    signals = ScalingSignals(ScalingThresholds(latency_sla_s=1.0, latency_high_periods=2))
    assert actions(signals, [period(latency_p50_s=1.2)] * 3) == ["hold"] * 3  # 1.2 is not over
    assert actions(signals, [period(latency_p50_s=1.21)] * 2) == ["hold", "scale_up"]


def test_after_an_action_cooldown_holds_then_counting_goes_on() -> None:
    signals = ScalingSignals(ScalingThresholds(cooldown_periods=2, backlog_high_periods=1))
    busy = period(queue_depth=5000)
    assert actions(signals, [busy] * 4) == ["scale_up", "hold", "hold", "scale_up"]


def test_scale_down_after_exactly_low_periods_and_drains_first() -> None:
    signals = ScalingSignals(ScalingThresholds(low_periods=4))
    idle = period(gpu_util=0.1, cpu_util=0.1, queue_depth=0)
    decisions = [signals.observe(idle, 3) for _ in range(4)]
    assert [d.action.value for d in decisions] == ["hold"] * 3 + ["scale_down"]
    down = decisions[-1]
    assert down.drain_first and down.target_instances == 2
    assert down.drain_steps[0].startswith("stop consuming")


def test_hysteresis_band_neither_scales_up_nor_down() -> None:
    signals = ScalingSignals(ScalingThresholds(low_periods=2))
    middling = period(gpu_util=0.6, queue_depth=0)  # under 85 %, over the 30 % low mark
    assert set(actions(signals, [middling] * 10)) == {"hold"}


def test_never_below_min_nor_above_max_instances() -> None:
    signals = ScalingSignals(ScalingThresholds(low_periods=1, min_instances=1, max_instances=2))
    idle = period(gpu_util=0.0, cpu_util=0.0, queue_depth=0)
    assert signals.observe(idle, 1).action == ScalingAction.HOLD
    assert signals.observe(period(queue_depth=9999), 2).action == ScalingAction.HOLD
