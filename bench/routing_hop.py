"""What the router hop costs a job: ``auto`` jobs against the same jobs sent straight to a model.

One real worker serves MiniLM (it consumes the route queue and classifies) and the test-engine
small and large models of tests/data/registry_routing.toml, so the engine itself costs next to
nothing and the difference is the hop: the route queue, the MiniLM classification through the
batcher, the live-metrics read, the job-row update and the confirmed republish. Baseline in the
same run: each round submits one direct job (task ``generate``, model ``small``) then one
``auto`` greeting, one at a time, so both sides see the same machine load; then a burst of
jobs per side for throughput.

    python bench/routing_hop.py                 # 40 pairs + bursts of 100
    python bench/routing_hop.py --pairs 20 --burst 50

Prints a table with the ratio (auto / direct) and saves bench/out/routing_hop.png.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import text  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infermq.settings import Settings  # noqa: E402
from producer.client import Client  # noqa: E402
from stores.database import dispose_engines, get_engine  # noqa: E402
from stores.migrate import upgrade_to_head  # noqa: E402
from tests.support import delete_namespace, settings_env  # noqa: E402

REGISTRY = Path(__file__).resolve().parent.parent / "tests" / "data" / "registry_routing.toml"
OUT = Path(__file__).parent / "out"
WAIT_S = 300


@contextlib.contextmanager
def bench_settings(workdir: Path) -> Iterator[Settings]:
    """Settings isolated by namespace, Redis prefix and schema; all removed afterwards.

    The generation models are made uncacheable: a semantic cache hit would skip the engine on
    one side and not the other.
    """
    tag = uuid.uuid4().hex[:8]
    registry = workdir / "registry_routing.toml"
    registry.write_text(REGISTRY.read_text().replace('engine = "test"',
                                                     'engine = "test"\ncacheable = false'))
    base = Settings()
    settings = base.model_copy(update={
        "namespace": f"bench{tag}", "redis_prefix": f"bench{tag}",
        "database_schema": f"bench_{tag}", "registry_path": registry, "test_hooks": True,
        "torch_threads": 1, "worker_slots": 16})
    try:
        upgrade_to_head(settings)
        yield settings
    finally:
        delete_namespace(settings)
        dispose_engines()
        with get_engine(base).begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{settings.database_schema}" '
                                    "CASCADE"))
        dispose_engines()
        client = redis.Redis.from_url(settings.redis_url)
        keys = list(client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def timed(client: Client, task_type: str, text_in: str, **fields: Any) -> float:
    started = time.perf_counter()
    client.submit(task_type, text_in, **fields).result(timeout_s=WAIT_S)
    return time.perf_counter() - started


def burst(client: Client, task_type: str, n: int, tag: str, **fields: Any) -> float:
    """Jobs/s of ``n`` jobs submitted at once and all waited for."""
    started = time.perf_counter()
    handles = [client.submit(task_type, f"hello there {tag} {i}", **fields) for i in range(n)]
    for handle in handles:
        handle.result(timeout_s=WAIT_S)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--burst", type=int, default=100)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="routing-hop-"))
    with bench_settings(workdir) as settings:
        log = open(workdir / "worker.log", "ab")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, "-m", "infermq.cli", "worker",
             "--models=minilm,small,large,small-next",
             f"--hostname=bench{uuid.uuid4().hex[:6]}@%h"],
            env=settings_env(settings), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        client = Client(settings)
        try:
            timed(client, "auto", "hi, warming up")  # the worker is up and routing
            direct_s, auto_s = [], []
            for i in range(args.pairs):
                direct_s.append(timed(client, "generate", f"good morning friend {i}",
                                      model="small"))
                auto_s.append(timed(client, "auto", f"good morning friend number {i}"))
            direct_rate = burst(client, "generate", args.burst, "direct", model="small")
            auto_rate = burst(client, "auto", args.burst, "auto")
        finally:
            client.close()
            worker.terminate()
            worker.wait(timeout=60)
            log.close()

    def p(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) * 1000

    rows = [
        ("p50 latency, ms", p(direct_s, 50), p(auto_s, 50)),
        ("p95 latency, ms", p(direct_s, 95), p(auto_s, 95)),
        ("mean latency, ms", statistics.mean(direct_s) * 1000, statistics.mean(auto_s) * 1000),
        (f"burst of {args.burst}, jobs/s", direct_rate, auto_rate),
    ]
    print(f"{'':28} {'direct (baseline)':>18} {'auto (routed)':>14} {'ratio':>7}")
    for name, base, routed in rows:
        print(f"{name:28} {base:18.1f} {routed:14.1f} {routed / base:7.2f}")
    print(f"hop cost (p50): {p(auto_s, 50) - p(direct_s, 50):.1f} ms per job")

    OUT.mkdir(exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.boxplot([np.array(direct_s) * 1000, np.array(auto_s) * 1000],
                 tick_labels=["direct", "auto (routed)"])
    left.set_ylabel("end-to-end latency, ms")
    left.set_title(f"{args.pairs} sequential jobs each")
    right.bar(["direct", "auto (routed)"], [direct_rate, auto_rate], color=["grey", "tab:blue"])
    right.set_ylabel("jobs/s")
    right.set_title(f"burst of {args.burst}")
    fig.suptitle("The router hop: auto vs direct, one worker (MiniLM + test engines)")
    fig.tight_layout()
    path = OUT / "routing_hop.png"
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
