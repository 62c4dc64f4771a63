"""SIGTERM, as Kubernetes stops a pod: the worker turns unready (/readyz 503, its models
DRAINING), finishes every job it holds, and exits 0 without losing or redelivering one."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import httpx

from infermq.settings import Settings
from producer.client import Client
from stores.jobstore import get_job
from tests.support import WorkerProcess
from tests.test_lose_nothing import open_gate, wait_at_gate
from tests.test_worker_metrics import free_port

WAIT_S = 120


def wait_for_readyz(url: str, status: int) -> dict[str, object]:
    """The first /readyz answer with ``status``, asked every 0.2 s until WAIT_S."""
    deadline, tick = time.monotonic() + WAIT_S, threading.Event()
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(url, timeout=5)
            if answer.status_code == status:
                return dict(answer.json())
        except httpx.TransportError:
            pass
        tick.wait(0.2)
    raise AssertionError(f"{url} never answered {status} within {WAIT_S} s")


def test_sigterm_turns_the_worker_unready_and_finishes_what_it_holds(
    echo_settings: Settings, start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    port = free_port()
    settings = echo_settings.model_copy(update={"metrics_port": port})
    client = client_for(settings)
    readyz = f"http://127.0.0.1:{port}/readyz"
    # Given a ready worker holding three jobs, the first at a gate inside the engine
    worker = start_worker(settings, ["echo"], slots=4)
    assert wait_for_readyz(readyz, 200)["models"] == {"echo": "READY"}
    jobs = [client.submit("generate", "gate:sigterm first job"),
            client.submit("generate", "second job"), client.submit("generate", "third job")]
    wait_at_gate(settings, "sigterm")

    # When Kubernetes sends SIGTERM
    os.killpg(worker.process.pid, signal.SIGTERM)

    # Then it turns unready while it still holds the gated job
    assert wait_for_readyz(readyz, 503)["models"] == {"echo": "DRAINING"}
    open_gate(settings, "sigterm")
    # and exits 0 once every job it held is done, each delivered once
    assert worker.wait_exit(WAIT_S) == 0
    for job in jobs:
        assert job.result(timeout_s=WAIT_S).status == "done"
        assert get_job(client.engine, job.id).attempts == 1
