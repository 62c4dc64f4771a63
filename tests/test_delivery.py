"""The path of one job through real processes: SDK → RabbitMQ → worker → Redis + PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

from infermq.jobstore import transitions_of
from infermq.settings import Settings
from producer.client import Client
from tests.support import WorkerProcess


def test_job_comes_back_from_a_worker_process(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(echo_settings)
    start_worker(echo_settings, ["echo"])
    job = client.submit("generate", "hello there world", priority=7)
    result = job.result(timeout_s=120)
    assert result.output == "hello there world"
    assert result.model == "echo"
    assert result.cache == "miss"
    assert job.status() == "done"
    assert transitions_of(client.engine, job.id) == ["submitting", "queued", "running", "done"]
