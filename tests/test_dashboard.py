"""The Grafana dashboard: every query reads a metric that a live worker, the gateway and beat
export, and every exported family is on a panel or listed as internal with its reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest

from infermq.settings import Settings
from producer.client import Client
from tests.fleet_scrape import exported_names, query_metric_names
from tests.gateway_support import GatewayProcess
from tests.support import WorkerProcess
from tests.test_worker_metrics import free_port
from workers.fleet_gauges import fleet_registry

GRAFANA_DIR = Path(__file__).parent.parent / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "infermq.json"
INTERNAL = GRAFANA_DIR / "internal_metrics.json"
PROMETHEUS_OWN = {"up"}


def panel_queries(dashboard: dict[str, Any]) -> dict[str, list[str]]:
    return {panel["title"]: [target["expr"] for target in panel["targets"]]
            for panel in dashboard["panels"] if panel["type"] != "row"}


def test_dashboard_panels_read_live_metrics_and_cover_every_family(
    echo_settings: Settings, start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client], tmp_path: Path,
) -> None:
    # Given a live worker that ran a job, a live gateway that answered a request, and beat's
    # fleet gauges on the same services
    port = free_port()
    settings = echo_settings.model_copy(update={"metrics_port": port})
    start_worker(settings, ["echo"])
    assert client_for(settings).submit("generate", "scrape me").result(timeout_s=120).output
    gateway = GatewayProcess(settings, tmp_path / "gateway.log")
    try:
        assert httpx.get(f"{gateway.url}/healthz", timeout=60).status_code == 200
        gateway_text = httpx.get(f"{gateway.url}/metrics", timeout=30).text
    finally:
        gateway.stop()
    worker_text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    registry, gauges = fleet_registry(settings)
    beat_text = generate_latest(registry).decode()
    gauges.close()
    families = exported_names([worker_text, gateway_text, beat_text])
    exported = set().union(*families.values()) | PROMETHEUS_OWN

    dashboard = json.loads(DASHBOARD.read_text())
    queries = panel_queries(dashboard)
    internal = json.loads(INTERNAL.read_text())["internal"]

    # Then every query names only exported metrics
    unknown = {title: sorted(query_metric_names(expr) - exported)
               for title, exprs in queries.items() for expr in exprs
               if query_metric_names(expr) - exported}
    assert unknown == {}
    # and every family is on a panel or listed as internal (and an internal one is real)
    read = set().union(*(query_metric_names(expr) for exprs in queries.values()
                         for expr in exprs))
    without_panel = sorted(family for family, names in families.items()
                           if not names & read and family not in internal)
    assert without_panel == []
    assert set(internal) <= set(families)


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]
