"""Helpers shared by the tests: cleaning up a namespace, reading queue depths and messages."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pika

from infermq.keys import QueueNames
from infermq.registry import load_registry
from infermq.settings import Settings
from producer.publisher import delete_topology
from routing.topology import build_topology


def queue_depth(settings: Settings, queue: str) -> int:
    """Messages ready in ``queue`` (0 when it does not exist)."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker:
            return 0
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def delete_namespace(settings: Settings, extra_queues: Sequence[str] = ()) -> None:
    """Deletes every queue and exchange of the settings' namespace."""
    names = QueueNames(settings.namespace)
    topology = build_topology(
        load_registry(settings.registry_path), names, settings.queue_max_length
    )
    delays = [names.webhook_delay(n) for n in range(settings.webhook_max_attempts + 1)]
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        delete_topology(connection.channel(), topology, [*delays, *extra_queues])
    finally:
        with contextlib.suppress(Exception):
            connection.close()


TEST_REGISTRY = Path(__file__).parent / "data" / "registry_test.toml"


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERMQ_")}
    env.update(settings.as_env())
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """A real worker (``infermq worker``) in its own process group, so a test can kill -9 it."""

    def __init__(self, settings: Settings, models: list[str], log_path: Path,
                 slots: int = 4) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infermq.cli", "worker", f"--models={','.join(models)}",
             f"--slots={slots}", f"--hostname=w{uuid.uuid4().hex[:6]}@%h"],
            env=settings_env(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the whole process group, as a crashed host would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM: Celery's warm shutdown finishes what the worker holds."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def wait_exit(self, timeout_s: float = 120) -> int:
        return self.process.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.terminate(timeout_s=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def take_job_message(settings: Settings, queue: str) -> dict[str, Any]:
    """Takes the next message off ``queue``; returns the job message its task carries."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        method, _properties, body = connection.channel().basic_get(queue, auto_ack=True)
    finally:
        connection.close()
    assert method is not None, f"no message on {queue}"
    return dict(json.loads(body)[1]["message"])


def take_dead_letters(settings: Settings, count: int, timeout_s: float = 120) -> list[dict]:
    """Waits for ``count`` messages on the dead-letter queue and takes them; returns their
    headers. Fails the test if fewer arrive within ``timeout_s``."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    taken: list[dict] = []
    try:
        channel = connection.channel()
        dead = QueueNames(settings.namespace).dead
        channel.queue_declare(dead, durable=True, arguments={"x-queue-type": "classic"})
        for method, properties, _body in channel.consume(dead, inactivity_timeout=timeout_s):
            if method is None:
                break
            channel.basic_ack(method.delivery_tag)
            taken.append(dict(properties.headers or {}))
            if len(taken) == count:
                break
        channel.cancel()
    finally:
        with contextlib.suppress(Exception):
            connection.close()
    assert len(taken) == count, f"{len(taken)} dead letters within {timeout_s} s, not {count}"
    return taken
