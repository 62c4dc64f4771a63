"""Periodic upkeep run by the workers on the side-task queue (never on an engine slot).

``infermq beat`` sends the session sweep every ``session_sweep_every_s``; a Redis lock makes
overlapping sweeps (two beats by mistake, a slow sweep) skip instead of racing.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from celery import Celery

from infermq.keys import SWEEP_SESSIONS_TASK, QueueNames, RedisKeys
from infermq.settings import Settings
from stores.connections import get_binary_redis
from stores.database import get_engine
from stores.session_sweep import sweep_sessions

log = logging.getLogger(__name__)


def register_maintenance_tasks(app: Celery, settings: Settings) -> None:
    keys = RedisKeys(settings.redis_prefix)

    @app.task(name=SWEEP_SESSIONS_TASK, ignore_result=True)
    def sweep() -> None:
        client = get_binary_redis(settings)
        lock = client.lock(keys.sweep_lock(), timeout=600, blocking=False)
        if not lock.acquire():
            log.info("a session sweep is already running; skipping this one")
            return
        try:
            report = sweep_sessions(
                get_engine(settings), client, keys, datetime.now(UTC),
                settings.session_idle_sleep_after_s, settings.session_terminate_after_s,
            )
            log.info("session sweep: %s", report)
        finally:
            lock.release()


def run_beat(settings: Settings, every_s: float) -> None:
    """Runs Celery beat in this process: sends the session sweep every ``every_s`` seconds to
    the side-task queue, and serves the fleet gauges (queue depths, dead letters, sessions by
    state) on ``metrics_port`` when set. Run one beat per deployment."""
    from workers.celery_app import create_app

    app = create_app(settings)
    side_queue = QueueNames(settings.namespace).webhooks
    app.conf.beat_schedule = {
        "sweep-sessions": {
            "task": SWEEP_SESSIONS_TASK,
            "schedule": every_s,
            "options": {"queue": side_queue, "routing_key": side_queue},
        }
    }
    schedule = Path(tempfile.gettempdir()) / f"infermq-beat-{settings.namespace}"
    if settings.metrics_port:
        from prometheus_client import start_http_server

        from workers.fleet_gauges import fleet_registry

        registry, _ = fleet_registry(settings)
        start_http_server(settings.metrics_port, settings.metrics_host, registry=registry)
        log.info("fleet gauges on http://%s:%d/metrics", settings.metrics_host,
                 settings.metrics_port)
    app.start(["beat", f"--schedule={schedule}", "--loglevel=INFO"])
