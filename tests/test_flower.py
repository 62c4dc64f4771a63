"""Flower, started by ``infermq flower`` before the worker, sees the worker and its jobs.

Flower learns of workers and tasks asynchronously (task events, heartbeats, broadcast inspect
replies), so this test polls its HTTP API until a deadline; it never sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from infermq.keys import RUN_JOB_TASK
from infermq.settings import Settings
from producer.client import Client
from tests.support import WorkerProcess, settings_env

FLOWER_USER = "ops"
FLOWER_PASSWORD = "flower-test-secret"
DEADLINE_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class FlowerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    deadline_s: float = DEADLINE_S

    def get(self, path: str, **params: str) -> Any:
        """One authenticated API call; None while Flower is not answering yet."""
        try:
            response = httpx.get(f"{self.base_url}{path}", params=params, timeout=5.0,
                                 auth=(FLOWER_USER, FLOWER_PASSWORD))
        except httpx.TransportError:
            return None
        response.raise_for_status()
        return response.json()

    def poll(self, path: str, until: Callable[[Any], bool], what: str,
             **params: str) -> Any:
        """Calls ``path`` until ``until(answer)`` holds; fails after ``deadline_s``."""
        deadline = time.monotonic() + self.deadline_s
        answer: Any = None
        while time.monotonic() < deadline:
            self.fail_if_exited()
            answer = self.get(path, **params)
            if answer is not None and until(answer):
                return answer
            time.sleep(0.2)
        pytest.fail(f"Flower did not show {what} within {self.deadline_s} s; last answer of "
                    f"{path}: {answer!r}\nFlower log:\n{self.log()}")

    def fail_if_exited(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"Flower exited with {self.process.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_flower(settings: Settings, log_path: Path, *options: str,
                   deadline_s: float = DEADLINE_S) -> Iterator[FlowerProcess]:
    """``infermq flower`` on a free loopback port with ``options``; stopped on exit."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "infermq.cli", "flower", f"--port={port}", *options],
            env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield FlowerProcess(process, f"http://127.0.0.1:{port}", log_path, deadline_s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


@pytest.fixture
def flower(echo_settings: Settings, tmp_path: Path) -> Iterator[FlowerProcess]:
    """``infermq flower`` with basic auth, answering its API once it is up."""
    with running_flower(echo_settings, tmp_path / "flower.log",
                        f"--basic-auth={FLOWER_USER}:{FLOWER_PASSWORD}") as flower:
        flower.poll("/api/workers", lambda answer: isinstance(answer, dict), "its API")
        yield flower


def worker_node_prefix(worker: WorkerProcess) -> str:
    """``w1a2b3c@`` from the worker's ``--hostname=w1a2b3c@%h`` argument."""
    args = worker.process.args
    assert isinstance(args, list)
    hostname = next(str(a) for a in args if str(a).startswith("--hostname="))
    return hostname.removeprefix("--hostname=").split("@")[0] + "@"


def test_flower_lists_the_worker_and_its_run_job_task(
    echo_settings: Settings,
    flower: FlowerProcess,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    # Given Flower already running, then a worker started after it, sending task events
    # from the start (the default; set here so an INFERMQ_TASK_EVENTS in the environment
    # cannot turn them off)
    worker = start_worker(echo_settings.model_copy(update={"task_events": True}), ["echo"])
    node = worker_node_prefix(worker)

    def ours(names: Any) -> list[str]:
        return [name for name in names if str(name).startswith(node)]

    # Flower's event receiver hears the worker (worker-online, heartbeats) before any job, so
    # it cannot miss the job's task events.
    alive = flower.poll("/api/workers", lambda answer: any(answer[n] for n in ours(answer)),
                        f"worker {node}* alive through events", status="true")
    # and it lists the worker through a broadcast inspect.
    listed = flower.poll("/api/workers", lambda answer: bool(ours(answer)),
                         f"worker {node}* through inspect", refresh="true")

    # When a job runs through it
    client = client_for(echo_settings)
    job = client.submit("classify", "is this listed in flower?")
    assert job.result(timeout_s=60).status == "done"

    # Then Flower lists that job as a succeeded infermq.run_job task on that worker
    tasks = flower.poll(
        "/api/tasks",
        lambda answer: answer.get(job.id, {}).get("state") == "SUCCESS",
        f"task {job.id} succeeded",
    )
    task = tasks[job.id]
    assert task["name"] == RUN_JOB_TASK
    assert task["worker"] in ours(alive)
    assert ours(listed) == ours(alive)
    queues = [q["name"] for q in listed[ours(listed)[0]]["active_queues"]]
    assert client.topology.queue_for("classify", "echo").name in queues
