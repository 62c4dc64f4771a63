"""Flower as a new user meets it: default settings, a worker started before, with or after
Flower, one job submitted at once, then Flower's Workers and Tasks pages opened in headless
Chromium.

Task events are on by default (``Settings.task_events``), so the worker's first job is seen.
Chromium is Debian's ``chromium`` (``.ci/run`` installs it when missing).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from infermq.keys import RUN_JOB_TASK
from infermq.settings import Settings
from producer.client import Client
from tests.support import WorkerProcess
from tests.test_coldstart_worker import wait_for_log
from tests.test_flower import FlowerProcess, running_flower, worker_node_prefix

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


class TableRows(HTMLParser):
    """The rows of a rendered table as {column: cell text}, the columns named by the
    ``data-column`` of its header cells (as Flower's tasks table names them)."""

    def __init__(self) -> None:
        super().__init__()
        self.columns: list[str] = []
        self.rows: list[dict[str, str]] = []
        self._cells: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "th":
            self.columns.append(dict(attrs).get("data-column") or "")
        elif tag == "tr":
            self._cells = []
        elif tag == "td" and self._cells is not None:
            self._cells.append("")

    def handle_data(self, data: str) -> None:
        if self._cells:
            self._cells[-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._cells:
            self.rows.append(dict(zip(self.columns, (c.strip() for c in self._cells),
                                      strict=False)))
            self._cells = None


def poll_rendered(url: str, until: Callable[[str], bool], what: str, flower: FlowerProcess,
                  tmp_path: Path) -> str:
    """Renders ``url`` until ``until(dom)`` holds; fails after ``DEADLINE_S``."""
    deadline, dom = time.monotonic() + DEADLINE_S, ""
    while time.monotonic() < deadline:
        flower.fail_if_exited()
        dom = rendered_dom(url, tmp_path)
        if until(dom):
            return dom
    pytest.fail(f"Flower's page {url} did not show {what} within {DEADLINE_S} s; it ended "
                f"with:\n{dom[-3000:]}\nFlower log:\n{flower.log()}")


def task_row(dom: str, job_id: str) -> dict[str, str] | None:
    table = TableRows()
    table.feed(dom)
    # The uuid cell holds the full id and its short form, each in a span of its own.
    return next((row for row in table.rows if row.get("uuid", "").startswith(job_id)), None)


def wait_until_ready(worker: WorkerProcess) -> None:
    """Celery logs ``<node>@<host> ready.`` once the worker consumes its queues."""
    wait_for_log(worker, f"{worker_node_prefix(worker)}{socket.gethostname()} ready.")


@pytest.fixture
def start_flower(echo_settings: Settings,
                 tmp_path: Path) -> Iterator[Callable[[], FlowerProcess]]:
    """``infermq flower`` exactly as documented (loopback, no options but the port), started
    when the test asks, answering its pages; stopped at the end."""
    with contextlib.ExitStack() as stack:

        def start() -> FlowerProcess:
            flower = stack.enter_context(
                running_flower(echo_settings, tmp_path / "flower.log", deadline_s=DEADLINE_S))
            # Flower's /api needs authentication by default: the gates read what its own
            # pages load.
            flower.poll("/workers", lambda answer: isinstance(answer, dict), "its pages",
                        json="1")
            return flower

        yield start


@pytest.mark.parametrize("start_order", ["worker_first", "together", "flower_first"])
def test_flower_pages_show_the_worker_and_its_first_job_with_default_settings(
    start_order: str,
    echo_settings: Settings,
    start_flower: Callable[[], FlowerProcess],
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
    tmp_path: Path,
) -> None:
    # Given a worker started before, with or after Flower, with the default settings
    assert echo_settings.task_events is True
    client = client_for(echo_settings)
    if start_order == "worker_first":
        # (up and idle, then Flower starts; the job goes as soon as Flower answers)
        worker = start_worker(echo_settings, ["echo"])
        wait_until_ready(worker)
        flower = start_flower()
    elif start_order == "flower_first":
        # (the job goes as soon as the worker is ready)
        flower = start_flower()
        worker = start_worker(echo_settings, ["echo"])
        wait_until_ready(worker)
    else:
        # (the job goes once Flower hears the worker: its receiver asks every worker for a
        # heartbeat when it starts consuming)
        worker = start_worker(echo_settings, ["echo"])
        flower = start_flower()
        node = worker_node_prefix(worker)
        flower.poll("/workers", lambda answer: any(
            w.get("status") for w in answer["data"] if str(w.get("hostname")).startswith(node)),
            f"worker {node}* alive", json="1")

    # When one job is submitted at once and finishes
    job = client.submit("classify", "is my first job in flower?")
    assert job.result(timeout_s=60).status == "done"

    # Then the Workers page lists the worker and the Tasks page the finished job (name, state,
    # runtime, worker), as rendered
    node = worker_node_prefix(worker)
    poll_rendered(f"{flower.base_url}/workers", lambda dom: node in dom, f"worker {node}*",
                  flower, tmp_path)
    tasks_page = poll_rendered(
        f"{flower.base_url}/tasks",
        lambda dom: (task_row(dom, job.id) or {}).get("state") == "SUCCESS",
        f"task {job.id} succeeded", flower, tmp_path)
    row = task_row(tasks_page, job.id)
    assert row is not None
    assert row["name"] == RUN_JOB_TASK
    assert row["runtime"], row
    assert row["worker"].startswith(node), row
