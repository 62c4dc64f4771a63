"""Checks that RabbitMQ, Redis and PostgreSQL answer, and starts any that is installed but down.

The start commands are Debian's usual ones, the same a developer would type.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from infermq.settings import Settings


@dataclass(frozen=True)
class Service:
    name: str
    host: str
    port: int
    start_command: list[str] | None
    install_hint: str


def _pg_start_command() -> list[str] | None:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or not shutil.which("pg_ctlcluster"):
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"]


def services_of(settings: Settings) -> list[Service]:
    """The three services the settings point at, each with how to start or install it."""
    amqp = urlsplit(settings.broker_url)
    red = urlsplit(settings.redis_url)
    pg = urlsplit(settings.database_url.replace("+psycopg", ""))
    redis_cmd = None
    if shutil.which("redis-server"):
        redis_cmd = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1",
                     "--port", str(red.port or 6379), "--save", "", "--appendonly", "no"]
    rabbit_cmd = ["rabbitmq-server", "-detached"] if shutil.which("rabbitmq-server") else None
    return [
        Service("RabbitMQ", amqp.hostname or "127.0.0.1", amqp.port or 5672, rabbit_cmd,
                "apt-get install rabbitmq-server"),
        Service("Redis", red.hostname or "127.0.0.1", red.port or 6379, redis_cmd,
                "apt-get install redis-server"),
        Service("PostgreSQL", pg.hostname or "127.0.0.1", pg.port or 5432, _pg_start_command(),
                "apt-get install postgresql"),
    ]


def is_listening(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def check_services(settings: Settings) -> list[str]:
    """One line per service that does not answer, saying what to do; empty when all answer."""
    problems = []
    for service in services_of(settings):
        if not is_listening(service.host, service.port):
            how = (" ".join(service.start_command) if service.start_command
                   else service.install_hint)
            problems.append(
                f"{service.name} at {service.host}:{service.port} does not answer: "
                f"run `infermq services` (or `{how}`)"
            )
    return problems


def start_missing_services(settings: Settings, wait_s: float = 60.0) -> list[str]:
    """Starts each local service that is down and installed; returns a line per service."""
    report = []
    for service in services_of(settings):
        if is_listening(service.host, service.port):
            report.append(f"{service.name}: running at {service.host}:{service.port}")
            continue
        if service.host not in ("127.0.0.1", "localhost", "::1"):
            report.append(f"{service.name}: {service.host}:{service.port} is down and remote: "
                          "start it on that host")
            continue
        if service.start_command is None:
            report.append(f"{service.name}: not installed; install it with "
                          f"`{service.install_hint}`")
            continue
        subprocess.run(service.start_command, check=False, capture_output=True)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not is_listening(service.host, service.port):
            time.sleep(0.5)
        state = "started" if is_listening(service.host, service.port) else "failed to start"
        report.append(f"{service.name}: {state} with `{' '.join(service.start_command)}`")
    return report

