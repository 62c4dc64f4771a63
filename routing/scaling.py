"""Scaling signals: from each period's metrics, scale a model up, hold, or drain one instance.

Seed 000's triggers: CPU/GPU over 85 % for 3 consecutive periods, a backlog over 1,000 jobs,
latency over the SLA by more than 20 %. Each trigger counts its own consecutive periods and
fires on exactly its count, not before. Hysteresis twice over: scale-down needs every signal
low (well under the up thresholds) for ``low_periods`` in a row, and after any action all
counters restart and ``cooldown_periods`` pass before the next one. Scale-down drains first:
the instance stops consuming its queue (Celery's cancel_consumer), finishes its in-flight jobs,
then stops. Pure: one ``observe`` call per model per period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from routing.metrics import ModelMetrics


class ScalingAction(StrEnum):
    SCALE_UP = "scale_up"
    HOLD = "hold"
    SCALE_DOWN = "scale_down"


@dataclass(frozen=True)
class ScalingThresholds:
    """When to scale (the seeds' figures by default)."""

    util_high: float = 0.85
    util_high_periods: int = 3
    backlog_high: int = 1000
    backlog_high_periods: int = 1
    latency_sla_s: float | None = None
    latency_over_sla: float = 0.20
    latency_high_periods: int = 1
    latency_stat: Literal["p50", "p99"] = "p50"
    util_low: float = 0.30
    backlog_low: int = 10
    low_periods: int = 5
    cooldown_periods: int = 2
    min_instances: int = 1
    max_instances: int = 8


DRAIN_STEPS = (
    "stop consuming the model's queue (cancel_consumer)",
    "finish the jobs in flight",
    "stop the instance",
)


@dataclass(frozen=True)
class ScalingDecision:
    """What to do with one model this period, why, and how (drain first on the way down)."""

    model: str
    action: ScalingAction
    reasons: tuple[str, ...]
    instances: int
    target_instances: int
    drain_first: bool = False
    drain_steps: tuple[str, ...] = ()


@dataclass
class _Counters:
    util_high: int = 0
    backlog_high: int = 0
    latency_high: int = 0
    low: int = 0
    cooldown: int = 0


@dataclass
class ScalingSignals:
    """Consecutive-period counters per model, turned into decisions."""

    thresholds: ScalingThresholds = field(default_factory=ScalingThresholds)
    _counters: dict[str, _Counters] = field(default_factory=dict)

    def observe(self, metrics: ModelMetrics, instances: int) -> ScalingDecision:
        """This period's decision for ``metrics.model``, which runs on ``instances`` workers."""
        t = self.thresholds
        c = self._counters.setdefault(metrics.model, _Counters())
        latency_s = metrics.latency_p50_s if t.latency_stat == "p50" else metrics.latency_p99_s
        sla_limit_s = t.latency_sla_s * (1 + t.latency_over_sla) if t.latency_sla_s else None

        c.util_high = c.util_high + 1 if metrics.util > t.util_high else 0
        c.backlog_high = c.backlog_high + 1 if metrics.queue_depth > t.backlog_high else 0
        c.latency_high = (
            c.latency_high + 1 if sla_limit_s is not None and latency_s > sla_limit_s else 0
        )
        latency_low = t.latency_sla_s is None or latency_s <= t.latency_sla_s
        is_low = metrics.util < t.util_low and metrics.queue_depth <= t.backlog_low and latency_low
        c.low = c.low + 1 if is_low else 0

        up_reasons = []
        if c.util_high >= t.util_high_periods:
            up_reasons.append(
                f"CPU/GPU {metrics.util:.0%} > {t.util_high:.0%} for {c.util_high} periods"
            )
        if c.backlog_high >= t.backlog_high_periods:
            up_reasons.append(f"backlog {metrics.queue_depth} > {t.backlog_high}")
        if c.latency_high >= t.latency_high_periods and sla_limit_s is not None:
            up_reasons.append(
                f"latency {latency_s:.3f}s > SLA {t.latency_sla_s}s + {t.latency_over_sla:.0%}"
            )

        if c.cooldown > 0:
            c.cooldown -= 1
            return self._hold(metrics.model, instances, "cooling down after the last action")
        if up_reasons:
            if instances >= t.max_instances:
                return self._hold(metrics.model, instances,
                                  f"at max_instances={t.max_instances}: " + "; ".join(up_reasons))
            self._reset(c)
            return ScalingDecision(metrics.model, ScalingAction.SCALE_UP, tuple(up_reasons),
                                   instances, instances + 1)
        if c.low >= t.low_periods and instances > t.min_instances:
            self._reset(c)
            reason = (f"low for {t.low_periods} periods: CPU/GPU {metrics.util:.0%} < "
                      f"{t.util_low:.0%}, backlog {metrics.queue_depth} <= {t.backlog_low}")
            return ScalingDecision(metrics.model, ScalingAction.SCALE_DOWN, (reason,), instances,
                                   instances - 1, drain_first=True, drain_steps=DRAIN_STEPS)
        return self._hold(metrics.model, instances, "no trigger reached its period count")

    def _reset(self, c: _Counters) -> None:
        c.util_high = c.backlog_high = c.latency_high = c.low = 0
        c.cooldown = self.thresholds.cooldown_periods

    @staticmethod
    def _hold(model: str, instances: int, reason: str) -> ScalingDecision:
        return ScalingDecision(model, ScalingAction.HOLD, (reason,), instances, instances)
