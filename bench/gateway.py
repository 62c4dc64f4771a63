"""What the HTTP gateway adds on top of the SDK: requests/s and p50/p99 latency, same run.

Both paths drive the same worker (the noop engine, so the model costs nothing) on the same
services: (a) the SDK in this process, ``Client.submit(...).result()``; (b) the gateway, as a
real ``infermq gateway`` process, ``POST /v1/embeddings`` with a keep-alive HTTP client (the
gateway does the same submit and wait inside). Every input is unique, so no cache answers.
Sequential requests give the added latency (p50/p99 of (b) minus (a)); a few concurrent
clients give requests/s. Blocks of (a) and (b) alternate, so drift on a shared machine hits
both alike.

    python bench/gateway.py [--requests 300] [--concurrency 8]

Needs RabbitMQ, Redis and PostgreSQL (`infermq services`); uses database ``test`` with a
schema of its own, dropped at the end. Prints a table with the ratios and saves
bench/out/gateway.png.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sqlalchemy import text  # noqa: E402

from infermq.settings import Settings  # noqa: E402
from producer.client import Client  # noqa: E402
from stores.database import get_engine  # noqa: E402
from stores.migrate import upgrade_to_head  # noqa: E402

OUT = Path(__file__).parent / "out"
REGISTRY = """
[task_types.embed]
default_model = "noop"
[task_types.generate]
default_model = "noop"
[models.noop]
task_types = ["embed", "generate"]
engine = "noop"
memory_mib = 0
max_batch_size = 32
max_wait_ms = 0.0
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def start(argv: list[str], settings: Settings, log: Path, pass_fds: tuple[int, ...] = ()
          ) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERMQ_")}
    env.update(settings.as_env())
    return subprocess.Popen([sys.executable, "-m", "infermq.cli", *argv], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, pass_fds=pass_fds,
                            start_new_session=True)


def timed(call: Callable[[str], object], count: int, tag: str) -> list[float]:
    latencies_ms = []
    for i in range(count):
        started = time.perf_counter()
        call(f"{tag} request {i} {uuid.uuid4().hex}")
        latencies_ms.append((time.perf_counter() - started) * 1000)
    return latencies_ms


def throughput(call: Callable[[str], object], count: int, concurrency: int, tag: str) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: call(f"{tag} burst {i} {uuid.uuid4().hex}"), range(count)))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="per path, sequential")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks per path")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="infermq-bench-gw-"))
    (workdir / "models.toml").write_text(REGISTRY)
    tag = uuid.uuid4().hex[:8]
    settings = Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        database_schema=f"bench_{tag}", namespace=f"bgw{tag}",
                        redis_prefix=f"bgw{tag}", registry_path=workdir / "models.toml",
                        worker_slots=8, gateway_auth="off")
    upgrade_to_head(settings)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    worker = start(["worker", "--models=noop", "--slots=8"], settings, workdir / "worker.log")
    gateway = start(["gateway", f"--fd={listener.fileno()}"], settings, workdir / "gateway.log",
                    (listener.fileno(),))
    client = Client(settings)
    http = httpx.Client(base_url=url, timeout=120,
                        limits=httpx.Limits(max_connections=args.concurrency * 2))

    def via_sdk(text_in: str) -> object:
        return client.submit("embed", text_in).result(timeout_s=120).output

    def via_gateway(text_in: str) -> object:
        answer = http.post("/v1/embeddings", json={"model": "noop", "input": text_in,
                                                   "encoding_format": "float"})
        answer.raise_for_status()
        return answer.json()["data"][0]["embedding"]

    try:
        for call in (via_sdk, via_gateway):  # warm up: worker start, connections, imports
            timed(call, 20, "warm")
        latencies: dict[str, list[float]] = {"sdk": [], "gateway": []}
        rates: dict[str, list[float]] = {"sdk": [], "gateway": []}
        per_block = max(1, args.requests // args.blocks)
        for block in range(args.blocks):
            for name, call in (("sdk", via_sdk), ("gateway", via_gateway)):
                latencies[name] += timed(call, per_block, f"{name}{block}")
                rates[name].append(throughput(call, per_block, args.concurrency,
                                              f"{name}{block}"))
    finally:
        http.close()
        client.close()
        for process in (gateway, worker):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
        with get_engine(settings).begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{settings.database_schema}" '
                                    "CASCADE"))

    rows = []
    for name in ("sdk", "gateway"):
        values = latencies[name]
        rows.append((name, statistics.median(rates[name]), percentile(values, 0.5),
                     percentile(values, 0.99)))
    (_, sdk_rps, sdk_p50, sdk_p99), (_, gw_rps, gw_p50, gw_p99) = rows
    print(f"\n{args.requests} sequential requests per path in {args.blocks} alternating blocks; "
          f"requests/s with {args.concurrency} concurrent clients (median of blocks)\n")
    print(f"{'path':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, rps, p50, p99 in rows:
        print(f"{name:<10}{rps:>10.1f}{p50:>10.2f}{p99:>10.2f}")
    print(f"\ngateway / sdk: req/s x{gw_rps / sdk_rps:.2f}, p50 x{gw_p50 / sdk_p50:.2f}, "
          f"p99 x{gw_p99 / sdk_p99:.2f}")
    print(f"added latency: p50 {gw_p50 - sdk_p50:+.2f} ms (goal <= 3 ms), "
          f"p99 {gw_p99 - sdk_p99:+.2f} ms")

    OUT.mkdir(exist_ok=True)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.boxplot([latencies["sdk"], latencies["gateway"]], showfliers=False)
    left.set_xticks([1, 2], ["SDK", "gateway"])
    left.set_ylabel("latency per request, ms (sequential)")
    right.bar(["SDK", "gateway"], [sdk_rps, gw_rps], color=["tab:blue", "tab:orange"])
    right.set_ylabel(f"requests/s ({args.concurrency} concurrent clients)")
    figure.suptitle(f"gateway vs SDK, noop engine: p50 {gw_p50 - sdk_p50:+.2f} ms added")
    figure.tight_layout()
    figure.savefig(OUT / "gateway.png", dpi=120)
    print(f"plot: {OUT / 'gateway.png'}")


if __name__ == "__main__":
    main()
