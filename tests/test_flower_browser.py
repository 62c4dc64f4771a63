"""Flower as a new user meets it: default settings, Flower and a worker started together, one job
submitted at once, then Flower's Workers and Tasks pages opened in headless Chromium.

Task events are on by default (``Settings.task_events``), so the worker's first job is seen.
Chromium is Debian's ``chromium`` (``.ci/run`` installs it when missing).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infermq.keys import RUN_JOB_TASK
from infermq.settings import Settings
from producer.client import Client
from tests.support import WorkerProcess, settings_env
from tests.test_flower import free_port, worker_node_prefix

DEADLINE_S = 60.0
INSTALL_HINT = ("chromium is missing: `apt-get install -y --no-install-recommends chromium` "
                "installs it (.ci/run does so on CI)")


def rendered_dom(url: str, tmp_path: Path) -> str:
    """The page's DOM after its scripts ran (Flower's tables load over XHR)."""
    browser = shutil.which("chromium")
    assert browser is not None, INSTALL_HINT
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", f"--user-data-dir={tmp_path / 'chromium'}",
         "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def poll_json(url: str, until: Callable[[Any], bool], what: str, process: subprocess.Popen[bytes],
              log_path: Path, **params: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    answer: Any = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Flower exited with {process.returncode}:\n{log_path.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(url, params=params, timeout=5.0)
            response.raise_for_status()
            answer = response.json()
            if until(answer):
                return answer
        time.sleep(0.2)
    pytest.fail(f"Flower did not show {what} within {DEADLINE_S} s; last answer: {answer!r}\n"
                f"Flower log:\n{log_path.read_text(errors='replace')}")


@pytest.fixture
def flower_default(
    echo_settings: Settings, tmp_path: Path
) -> Iterator[tuple[str, Callable[..., Any]]]:
    """``infermq flower`` exactly as documented: loopback, no options but the port."""
    port = free_port()
    log_path = tmp_path / "flower.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "infermq.cli", "flower", f"--port={port}"],
            env=settings_env(echo_settings), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"

    def poll(path: str, until: Callable[[Any], bool], what: str, **params: str) -> Any:
        return poll_json(base_url + path, until, what, process, log_path, **params)

    try:
        yield base_url, poll
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def test_flower_pages_show_the_worker_and_its_first_job_with_default_settings(
    echo_settings: Settings,
    flower_default: tuple[str, Callable[..., Any]],
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
    tmp_path: Path,
) -> None:
    # Given Flower and a worker started together, with the default settings
    assert echo_settings.task_events is True
    base_url, poll = flower_default
    worker = start_worker(echo_settings, ["echo"])
    node = worker_node_prefix(worker)

    def ours(names: Any) -> list[str]:
        return [name for name in names if str(name).startswith(node)]

    # Flower is up once its event receiver hears the worker (its receiver asks every worker for
    # a heartbeat when it starts consuming, so the start order does not matter). Flower's /api
    # needs authentication by default: the gates read what its own pages load.
    poll("/workers", lambda answer: any(w.get("status") for w in answer["data"]
                                        if str(w.get("hostname")).startswith(node)),
         f"worker {node}* alive", json="1")

    # When one job is submitted at once and finishes
    client = client_for(echo_settings)
    job = client.submit("classify", "is my first job in flower?")
    assert job.result(timeout_s=60).status == "done"

    def succeeded(answer: Any) -> bool:
        return any(t.get("uuid") == job.id and t.get("state") == "SUCCESS"
                   for t in answer["data"])

    poll("/tasks/datatable", succeeded, f"task {job.id} succeeded",
         **{"draw": "1", "start": "0", "length": "100", "search[value]": job.id,
            "order[0][column]": "0", "columns[0][data]": "name", "order[0][dir]": "asc"})

    # Then the Workers page lists the worker and the Tasks page the finished job, as rendered
    workers_page = rendered_dom(f"{base_url}/workers", tmp_path)
    assert node in workers_page, workers_page[-2000:]
    tasks_page = rendered_dom(f"{base_url}/tasks", tmp_path)
    assert job.id in tasks_page, tasks_page[-2000:]
    row = tasks_page[tasks_page.index(job.id) - 2000: tasks_page.index(job.id) + 2000]
    assert RUN_JOB_TASK in row
    assert "SUCCESS" in row
    assert node in row
