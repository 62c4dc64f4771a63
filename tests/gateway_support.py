"""A real gateway process for tests, and a webhook receiver the tests control."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from infermq.settings import Settings
from tests.support import settings_env


class GatewayProcess:
    """``infermq gateway`` in its own process, serving a socket the test bound first: requests
    wait in the socket's backlog until the app is up, so no test polls for readiness."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.log_path = log_path
        self.settings = settings
        self.process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "infermq.cli", "gateway", f"--fd={self.listener.fileno()}"],
            env=settings_env(self.settings), stdout=self._log, stderr=subprocess.STDOUT,
            pass_fds=[self.listener.fileno()], start_new_session=True,
        )

    def restart(self) -> None:
        """Kills the gateway (-9: its clients' streams break mid-way) and starts another on
        the same socket; connections made meanwhile wait in its backlog."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = self._start()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.listener.close()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that answers webhooks with the statuses it is given, in
    order (then 200), and records every request."""

    statuses: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    succeeded: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                answered = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.deliveries.append(Delivery(dict(self.headers), body, answered))
                self.send_response(answered)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if answered == 200:
                    receiver.succeeded.set()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def payloads(self) -> list[dict]:
        return [json.loads(d.body) for d in self.deliveries]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
