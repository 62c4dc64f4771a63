"""QoS-weighted choice among the models eligible for a job, with error cooldowns and fallbacks.

The seeds' weight, for each model with live metrics::

    w = 0.5 / latency_s + 0.3 * throughput / max_throughput + 0.2 / resource_usage

latency in seconds (p50 by default), throughput in jobs/s relative to the best eligible model,
resource usage the scarcest of GPU, CPU and memory as a fraction floored at 0.05 (an idle model
would otherwise weigh infinitely). The highest weight wins; the others, in order, are the
fallbacks. A model over its error budget cools down (is skipped) for ``cooldown_s``; a model
with no fresh metrics or no READY instance is "not loaded", one whose queue is at the limit is
"full". Pure: the clock is a parameter.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from infermq.errors import NoEligibleModel
from routing.metrics import ModelMetrics


@dataclass(frozen=True)
class QosWeights:
    """The three coefficients of the weight formula (the seeds': 0.5, 0.3, 0.2)."""

    latency: float = 0.5
    throughput: float = 0.3
    resource: float = 0.2


@dataclass(frozen=True)
class QosPolicy:
    """How the QoS choice weighs models and when it skips them."""

    weights: QosWeights = QosWeights()
    latency_stat: Literal["p50", "p99"] = "p50"
    min_latency_s: float = 0.001
    min_resource_usage: float = 0.05
    error_budget: float = 0.05
    cooldown_s: float = 30.0
    max_queue_depth: int | None = None
    stale_after_s: float = 15.0


def qos_weight(metrics: ModelMetrics, max_throughput: float, policy: QosPolicy) -> float:
    """The seeds' weight of one model; ``max_throughput`` is the best among the eligible."""
    latency_s = metrics.latency_p50_s if policy.latency_stat == "p50" else metrics.latency_p99_s
    latency_s = max(latency_s, policy.min_latency_s)
    usage = min(1.0, max(metrics.resource_usage, policy.min_resource_usage))
    relative_throughput = metrics.throughput_jobs_per_s / max_throughput if max_throughput else 0.0
    w = policy.weights
    return w.latency / latency_s + w.throughput * relative_throughput + w.resource / usage


class ErrorCooldowns:
    """Which models are cooling down after their error rate went over the budget.

    A model trips when a metrics reading newer than its last trip shows an error rate over
    ``error_budget``; it is skipped until ``cooldown_s`` later. Requiring a newer reading keeps a
    stale high error rate, still on Redis when the cooldown ends, from tripping it again.
    """

    def __init__(self, error_budget: float = 0.05, cooldown_s: float = 30.0) -> None:
        self.error_budget = error_budget
        self.cooldown_s = cooldown_s
        self._until_s: dict[str, float] = {}
        self._evidence_at_s: dict[str, float] = {}

    @classmethod
    def for_policy(cls, policy: QosPolicy) -> ErrorCooldowns:
        return cls(policy.error_budget, policy.cooldown_s)

    def observe(self, metrics: ModelMetrics, now_s: float) -> None:
        """Trips the model's cooldown when ``metrics`` is new evidence of too many errors."""
        if metrics.error_rate <= self.error_budget:
            return
        if metrics.updated_at_s <= self._evidence_at_s.get(metrics.model, float("-inf")):
            return
        if self.is_cooling(metrics.model, now_s):
            return
        self._evidence_at_s[metrics.model] = metrics.updated_at_s
        self._until_s[metrics.model] = now_s + self.cooldown_s

    def cooling_until_s(self, model: str, now_s: float) -> float | None:
        """When the model's cooldown ends, or None when it is not cooling down at ``now_s``."""
        until_s = self._until_s.get(model)
        return until_s if until_s is not None and now_s < until_s else None

    def is_cooling(self, model: str, now_s: float) -> bool:
        return self.cooling_until_s(model, now_s) is not None


Tier = Literal["ranked", "cold", "cooling"]


@dataclass(frozen=True)
class QosChoice:
    """The chosen model, why, and what to try next when it cannot take the job.

    ``tier`` says how good the choice is: ``ranked`` (a loaded model chosen by weight),
    ``cold`` (no candidate is loaded; the job waits in the queue while a worker loads it),
    ``cooling`` (every candidate is cooling down; the one that recovers first).
    """

    model: str
    tier: Tier
    reason: str
    fallbacks: tuple[str, ...]
    weights: Mapping[str, float] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)


def choose_by_qos(
    candidates: Sequence[str],
    metrics: Mapping[str, ModelMetrics],
    now_s: float,
    policy: QosPolicy = QosPolicy(),
    cooldowns: ErrorCooldowns | None = None,
    exclude: Collection[str] = (),
) -> QosChoice:
    """The candidate with the highest QoS weight that can take a job now, and its fallbacks.

    ``candidates`` are in preference order (ties and cold starts follow it); ``metrics`` are the
    aggregated per-model figures; ``cooldowns`` is updated from them (pass the same object on
    every call, its memory is the cooldown); ``exclude`` names models that just failed this job.

    Raises:
        NoEligibleModel: every candidate is excluded or full.
    """
    cooldowns = cooldowns or ErrorCooldowns.for_policy(policy)
    fresh = {
        name: m
        for name, m in metrics.items()
        if name in candidates and now_s - m.updated_at_s <= policy.stale_after_s
    }
    for m in fresh.values():
        cooldowns.observe(m, now_s)

    skipped: dict[str, str] = {}
    loaded: list[str] = []
    cold: list[str] = []
    cooling: list[tuple[float, str]] = []
    for name in candidates:
        reading = fresh.get(name)
        until_s = cooldowns.cooling_until_s(name, now_s)
        if name in exclude:
            skipped[name] = "excluded after a failure"
        elif reading is not None and policy.max_queue_depth is not None and (
            reading.queue_depth >= policy.max_queue_depth
        ):
            skipped[name] = f"full: {reading.queue_depth} queued >= {policy.max_queue_depth}"
        elif until_s is not None:
            skipped[name] = f"cooling down until t={until_s:.1f}s (error budget exceeded)"
            cooling.append((until_s, name))
        elif reading is None or reading.ready_instances == 0:
            skipped[name] = "not loaded (no READY instance with fresh metrics)"
            cold.append(name)
        else:
            loaded.append(name)

    max_throughput = max((fresh[n].throughput_jobs_per_s for n in loaded), default=0.0)
    weights = {n: qos_weight(fresh[n], max_throughput, policy) for n in loaded}
    ranked = sorted(loaded, key=lambda n: -weights[n])  # stable: ties keep candidate order
    by_recovery = [name for _, name in sorted(cooling)]
    order = ranked + cold + by_recovery
    if not order:
        raise NoEligibleModel(
            f"no model can take the job: {skipped}; wait for queues to drain or add a worker"
        )
    chosen = order[0]
    if ranked:
        tier: Tier = "ranked"
        reason = f"QoS weight {weights[chosen]:.2f} is the highest of " + ", ".join(
            f"{n}={weights[n]:.2f}" for n in ranked
        )
    elif cold:
        tier = "cold"
        reason = f"no eligible model is loaded; {chosen} waits for a cold start"
    else:
        tier = "cooling"
        reason = f"every eligible model is cooling down; {chosen} recovers first"
    if skipped:
        reason += "; skipped " + "; ".join(f"{n}: {why}" for n, why in skipped.items())
    return QosChoice(
        model=chosen,
        tier=tier,
        reason=reason,
        fallbacks=tuple(order[1:]),
        weights=weights,
        skipped=skipped,
    )
