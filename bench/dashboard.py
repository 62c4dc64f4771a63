"""The dashboard rendered without Grafana: every panel's queries, evaluated by a real Prometheus
scraping a live worker, the gateway and beat on this machine, as a table.

    python bench/dashboard.py      # table on stdout and in bench/out/dashboard.md

A screenshot of Grafana is not possible here (no Grafana); Prometheus (Debian's package, the one
that ships promtool) scrapes the three processes every second while jobs run through them, then
answers each panel's PromQL at one instant. A query that returns no series is shown as such:
it names a real metric (tests/test_dashboard.py checks that) that has no sample yet, e.g. a
failure that did not happen.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import yaml
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infermq.errors import JobFailed  # noqa: E402
from infermq.settings import Settings  # noqa: E402
from producer.client import Client  # noqa: E402
from stores.database import get_engine  # noqa: E402
from stores.migrate import upgrade_to_head  # noqa: E402
from tests.gateway_support import GatewayProcess  # noqa: E402
from tests.support import TEST_REGISTRY, WorkerProcess, delete_namespace, settings_env  # noqa: E402
from tests.test_worker_metrics import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "infermq.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
OUT = Path(__file__).parent / "out"
SCRAPE_FOR_S = 40


def wait_until(check: object, timeout_s: float, what: str) -> None:
    deadline, tick = time.monotonic() + timeout_s, threading.Event()
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.TransportError:
            pass
        tick.wait(0.5)
    raise SystemExit(f"{what} did not happen within {timeout_s} s")


def render(value: dict[str, object]) -> str:
    metric = {k: v for k, v in value["metric"].items()  # type: ignore[attr-defined]
              if k not in ("instance", "__name__")}
    if len(metric) > 1:
        metric.pop("job", None)  # every series has one; shown only when it is all there is
    label = ",".join(f"{k}={v}" for k, v in sorted(metric.items())) or "-"
    number = float(value["value"][1])  # type: ignore[index]
    return f"{label}: {number:.4g}"


def main() -> None:
    tag = uuid.uuid4().hex[:8]
    worker_port, beat_port, prom_port = free_port(), free_port(), free_port()
    settings = Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        redis_url="redis://127.0.0.1:6379/1", namespace=f"dash{tag}",
                        redis_prefix=f"dash{tag}", database_schema=f"bench_{tag}",
                        registry_path=TEST_REGISTRY, metrics_interval_s=1.0, test_hooks=True)
    upgrade_to_head(settings)
    work = Path(tempfile.mkdtemp(prefix="infermq-dashboard-"))
    beat_log = open(work / "beat.log", "ab")  # noqa: SIM115 - closed in the finally below
    prometheus_log = open(work / "prometheus.log", "ab")  # noqa: SIM115 - as beat_log
    worker = WorkerProcess(settings.model_copy(update={"metrics_port": worker_port}), ["echo"],
                           work / "worker.log")
    gateway = GatewayProcess(settings, work / "gateway.log")
    beat = subprocess.Popen([sys.executable, "-m", "infermq.cli", "beat"],
                            env=settings_env(settings.model_copy(
                                update={"metrics_port": beat_port})),
                            stdout=beat_log, stderr=subprocess.STDOUT)
    gateway_host = gateway.url.removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "infermq-worker",
             "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
            {"job_name": "infermq-gateway", "static_configs": [{"targets": [gateway_host]}]},
            {"job_name": "infermq-beat",
             "static_configs": [{"targets": [f"127.0.0.1:{beat_port}"]}]},
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = subprocess.Popen(
        [shutil.which("prometheus") or "prometheus", f"--config.file={work / 'prometheus.yml'}",
         f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=prometheus_log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{prom_port}/api/v1/query"
    client = Client(settings)
    try:
        def all_up() -> bool:
            answer = httpx.get(api, params={"query": 'sum(up{job=~"infermq-.*"})'}, timeout=5)
            result = answer.json()["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) == 3

        httpx.get(f"{gateway.url}/healthz", timeout=60)
        wait_until(all_up, 180, "three targets up")
        # jobs through the SDK and the gateway for SCRAPE_FOR_S, one in ten failing
        deadline, i = time.monotonic() + SCRAPE_FOR_S, 0
        client.session()  # one INIT session for the sessions panel
        while time.monotonic() < deadline:
            job = client.submit("generate", f"fail job {i}" if i % 10 == 9 else f"job {i}")
            with contextlib.suppress(JobFailed):  # one in ten fails: the point
                job.result(timeout_s=60)
            if i % 5 == 0:
                httpx.get(f"{gateway.url}/v1/jobs/{job.id}", timeout=10)
            i += 1
        time.sleep(3)  # two more scrapes after the last job
        rows = []
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            if panel["type"] == "row":
                rows.append(f"| **{panel['title']}** | | |")
                continue
            for target in panel["targets"]:
                answer = httpx.get(api, params={"query": target["expr"]}, timeout=10).json()
                if answer["status"] != "success":
                    shown = f"error: {answer.get('error')}"
                else:
                    series = answer["data"]["result"]
                    shown = "; ".join(render(v) for v in series[:4]) or "(no series)"
                    if len(series) > 4:
                        shown += f"; ... {len(series)} series"
                expr = target["expr"].replace("|", "\\|")
                rows.append(f"| {panel['title']} | `{expr}` | {shown} |")
        alerts = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/alerts", timeout=10).json()
        firing = [a["labels"]["alertname"] for a in alerts["data"]["alerts"]]
        table = "\n".join([f"{i} jobs over {SCRAPE_FOR_S} s, scraped every 1 s\n",
                           "| panel | query | result at the end |", "| --- | --- | --- |", *rows,
                           f"\nalerts pending or firing: {firing or 'none'}"])
        print(table)
        OUT.mkdir(exist_ok=True)
        (OUT / "dashboard.md").write_text(table + "\n")
    finally:
        client.close()
        prometheus.terminate()
        beat.terminate()
        prometheus.wait(30)
        beat.wait(30)
        gateway.stop()
        worker.stop()
        beat_log.close()
        prometheus_log.close()
        delete_namespace(settings)
        with get_engine(settings).begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{settings.database_schema}" CASCADE'))


if __name__ == "__main__":
    main()
