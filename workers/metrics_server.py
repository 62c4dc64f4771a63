"""A worker's HTTP port: ``/metrics`` for Prometheus and ``/readyz`` from its model states.

Kubernetes' readiness probe asks ``/readyz``: 200 while at least one model is READY here, 503
while every model is LOADING, DRAINING or FAILED (at start, and once a SIGTERM or a scale-down
drain began), so a rollout waits for loaded workers. prometheus_client serves only metrics
(``start_http_server`` takes no other route), hence this small WSGI server around its app.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from routing.metrics import InstanceStateName


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes every few seconds would flood the worker's log."""


class MetricsServer:
    """Serves ``registry`` and the readiness of ``states()`` on one port, on its own thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 states: Callable[[], dict[str, InstanceStateName]]) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._states = states
        self._server = make_server(host, port, self._app, _ThreadingWSGIServer, _QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http",
                                        daemon=True)
        self._thread.start()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/readyz":
            return self._metrics_app(environ, start_response)
        states = self._states()
        ready = any(state == "READY" for state in states.values())
        start_response("200 OK" if ready else "503 Service Unavailable",
                       [("Content-Type", "application/json")])
        return [json.dumps({"ready": ready, "models": states}).encode()]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
