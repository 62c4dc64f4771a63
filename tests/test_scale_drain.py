"""Scaling on this machine: `infermq scale` prints decisions on live metrics, and scale-down
drains a real worker first (stop consuming, finish in-flight jobs, stop) without losing or
redelivering a job."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from infermq.settings import Settings
from producer.client import Client
from stores.jobstore import get_job
from tests.support import queue_depth, settings_env
from tests.test_lose_nothing import open_gate, wait_at_gate
from tests.test_worker_metrics import wait_for_snapshot
from workers.local_scaling import LocalActuator

WAIT_S = 120


def consumers_of(settings: Settings, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        connection.close()


@pytest.fixture
def actuator(echo_settings: Settings, tmp_path: Path) -> Iterator[LocalActuator]:
    settings = echo_settings.model_copy(update={"metrics_interval_s": 0.5})
    local = LocalActuator(settings, log_dir=tmp_path)
    yield local
    local.close()


def test_scale_down_drains_a_worker_with_jobs_inside_the_engine_and_loses_none(
    actuator: LocalActuator,
) -> None:
    settings = actuator.settings
    client = Client(settings)
    try:
        queue = client.topology.queue_for("generate", "echo").name
        # Given three jobs inside a worker, the first held at a gate in the engine
        jobs = [client.submit("generate", "gate:drain first job"),
                client.submit("generate", "second job"), client.submit("generate", "third job")]
        worker = actuator.start(["echo"], slots=4)
        wait_at_gate(settings, "drain")
        assert queue_depth(settings, queue) == 0  # all three were delivered (prefetch 4)

        # `infermq scale` sees the live instance and decides for it
        wait_for_snapshot(settings, "echo", lambda s: s.state == "READY")
        printed = subprocess.run([sys.executable, "-m", "infermq.cli", "scale"],
                                 env=settings_env(settings), capture_output=True, text=True,
                                 timeout=60, check=True).stdout
        assert "echo" in printed and "hold" in printed

        # When the worker is drained: it stops consuming first, and reports the model DRAINING
        stopped = actuator.stop_consuming(worker)
        assert queue in stopped
        assert consumers_of(settings, queue) == 0
        wait_for_snapshot(settings, "echo", lambda s: s.state == "DRAINING")
        later = client.submit("generate", "submitted after the drain began")
        finished = threading.Thread(target=actuator.finish_and_stop, args=(worker, WAIT_S))
        finished.start()
        # then finishes what it holds once the engine lets it, and stops
        open_gate(settings, "drain")
        finished.join(timeout=WAIT_S)
        assert not finished.is_alive()
        assert worker.process is not None and worker.process.returncode == 0

        # Then every job it held completed exactly once, none redelivered
        for job in jobs:
            assert job.result(timeout_s=WAIT_S).status == "done"
            assert get_job(client.engine, job.id).attempts == 1
        # and the job that came later waits in the queue for another worker
        assert later.status() == "queued" and queue_depth(settings, queue) == 1
    finally:
        client.close()
