"""What the one beat process exports for the whole fleet: queue depths, dead letters, sessions.

Workers see only their own models' queues and no session table; one process per deployment
(beat) reads the broker and PostgreSQL once per scrape, so nothing is added to the job path and
a fleet of N workers does not ask the broker N times.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from infermq.keys import QueueNames
from infermq.registry import load_registry
from infermq.sessions import SessionState
from infermq.settings import Settings
from infermq.tables import sessions
from stores.database import get_engine
from workers.metrics import QueueDepths

log = logging.getLogger(__name__)


class FleetGauges(Collector):
    """Reads every queue's ready count and the sessions by state on each scrape.

    A figure the broker or the database cannot give is left out of that scrape (the series
    goes stale and ``up`` stays 1): the alert on a missing figure is the worker-down rule.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = QueueNames(settings.namespace)
        self.registry = load_registry(settings.registry_path)
        self.model_queues = [(task.value, name) for task, name in self.registry.queues()]
        self._depths = QueueDepths(settings.broker_url)
        # One broker connection; Prometheus' HTTP server may run two scrapes at once.
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            yield from self._read()

    def _read(self) -> Iterator[GaugeMetricFamily]:
        ready = GaugeMetricFamily("infermq_queue_messages_ready", "Messages ready in each job "
                                  "queue", labels=["task_type", "model"])
        for task_type, model in self.model_queues:
            depth = self._depths.ready_in_bands(self.names.for_model(task_type, model))
            if depth is not None:
                ready.add_metric([task_type, model], depth)
        yield ready
        for name, depth, doc in (
            ("infermq_dead_letter_messages", self._depths.ready(self.names.dead),
             "Messages in the dead-letter queue"),
            ("infermq_route_queue_messages", self._depths.ready_in_bands(self.names.route),
             "Auto jobs waiting for the router"),
        ):
            family = GaugeMetricFamily(name, doc)
            if depth is not None:
                family.add_metric([], depth)
            yield family
        yield from self._registry_bounds()
        by_state = GaugeMetricFamily("infermq_sessions", "Sessions by state", labels=["state"])
        try:
            with get_engine(self.settings).connect() as connection:
                rows = connection.execute(
                    select(sessions.c.state, func.count()).group_by(sessions.c.state)).all()
            counts: dict[str, int] = {state: count for state, count in rows}
            for state in SessionState:
                by_state.add_metric([state.value], counts.get(state.value, 0))
        except SQLAlchemyError as e:
            log.warning("sessions not counted for this scrape: %s", e)
        yield by_state

    def _registry_bounds(self) -> Iterator[GaugeMetricFamily]:
        """The registry's per-model promises as series, so alert rules compare against the
        registry (``> on(model)``) instead of copying its figures."""
        sla = GaugeMetricFamily("infermq_model_latency_sla_seconds", "The registry's "
                                "latency_sla_s of each model that has one", labels=["model"])
        backlog = GaugeMetricFamily("infermq_model_max_backlog_messages", "The registry's "
                                    "max_backlog of each model", labels=["model"])
        for name, spec in self.registry.models.items():
            if spec.latency_sla_s is not None:
                sla.add_metric([name], spec.latency_sla_s)
            backlog.add_metric([name], spec.max_backlog)
        yield sla
        yield backlog

    def close(self) -> None:
        self._depths.close()


def fleet_registry(settings: Settings) -> tuple[CollectorRegistry, FleetGauges]:
    """A registry holding only the fleet gauges (beat serves it on ``metrics_port``)."""
    registry = CollectorRegistry()
    gauges = FleetGauges(settings)
    registry.register(gauges)
    return registry, gauges
