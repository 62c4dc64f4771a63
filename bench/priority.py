"""How long high-priority jobs wait behind a low-priority backlog, against the same run in FIFO.

Through the real path: ``Client.submit`` (PostgreSQL row, confirmed publish to RabbitMQ's
priority queue), a worker process (``infermq worker``, threads pool, prefetch 1 per slot) on
the ``noop`` engine, results read back through Redis. For each backlog size:

  1. with the worker stopped, ``backlog`` low-priority embed jobs are submitted;
  2. the worker starts; once it has visibly eaten into the backlog, ``--highs`` high-priority
     jobs are submitted one every ``--high-gap-ms``;
  3. each high job's wait is the time from its ``submit`` call to its result.

"priority" submits the backlog at priority 1 and the high jobs at 9; "FIFO" runs the same with
every job at priority 5 (priorities ignored). The goal is a high-priority wait that does not
grow with the backlog; FIFO shows what it would be otherwise. The worker's engine does no work,
so what is measured is the queueing alone. What is left of the backlog once the high jobs are
done is purged, so a run stays short::

    python bench/priority.py                       # backlogs of 1,000 and 10,000
    python bench/priority.py --backlogs 1000 --highs 20

A second case, "sustained p9 + one p0" (issue 15, item 2; ``--sustained`` N, 0 skips it): N
priority-9 jobs are submitted, the worker starts, and once it has eaten a quarter of them one
priority-0 job is submitted (with ``--lows`` more behind it); the figures are how many
priority-9 jobs committed ``done`` between its submit and its own ``done`` (the order of the
``done`` transitions in PostgreSQL), its wait, and the priority-9 throughput meanwhile. "today"
publishes the priority-0 job into the model's priority queue (a topology without low bands: the
single queue of before); "bands" through the product, to ``<queue>.low``, consumed on the
worker's second channel (workers/low_band.py). Saves bench/out/priority_sustained.png too.

Prints a table with the ratios and saves bench/out/priority.png. Cleans up its queues, Redis
keys and PostgreSQL schema (``bench/pipeline_overhead.py`` provides the isolation).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pika
from pipeline_overhead import (
    bench_settings,
    delete_queues,
    settings_env,
    start_process,
    stop_worker,
)
from sqlalchemy import func, select

from infermq.keys import QueueNames
from infermq.settings import Settings
from infermq.tables import job_transitions
from producer.client import Client

OUT = Path(__file__).parent / "out"
HIGH, LOW, EQUAL = 9, 1, 5
THROUGHPUT_JOBS = 500


@dataclass
class Scenario:
    backlog: int
    order: str
    waits_s: list[float]
    backlog_left: int

    def percentile_s(self, share: float) -> float:
        ordered = sorted(self.waits_s)
        return ordered[round(share * (len(ordered) - 1))]


def queue_depth(settings: Settings, queue: str) -> int:
    """Messages ready in ``queue`` (those a worker holds unacked are not counted)."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def purge(settings: Settings, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        connection.channel().queue_purge(queue)
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def submit_backlog(client: Client, count: int, priority: int, tag: str, threads: int) -> None:
    """Submits ``count`` low-priority jobs from several threads (each waits for its confirm)."""
    def submit(i: int) -> None:
        client.submit("embed", f"backlog {tag} {i}", priority=priority)

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(submit, i) for i in range(count)]:
            future.result()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not happen within {timeout_s:g} s")
        time.sleep(0.05)


def run_scenario(settings: Settings, client: Client, args: argparse.Namespace, backlog: int,
                 honour_priority: bool, workdir: Path) -> Scenario:
    queue = QueueNames(settings.namespace).for_model("embed", "noop")
    tag = uuid.uuid4().hex[:6]
    low, high = (LOW, HIGH) if honour_priority else (EQUAL, EQUAL)
    order = "priority" if honour_priority else "FIFO"
    started = time.perf_counter()
    submit_backlog(client, backlog, low, tag, args.submit_threads)
    print(f"  {order:8} backlog {backlog}: submitted in {time.perf_counter() - started:.1f} s",
          flush=True)
    worker = start_process(
        [sys.executable, "-m", "infermq.cli", "worker", "--models=noop", f"--slots={args.slots}",
         "--loglevel=WARNING"], settings_env(settings), workdir / f"worker-{tag}.log")
    try:
        # Proof that the worker consumes: the backlog has shrunk by a few batches.
        eaten = min(200, backlog // 5)
        wait_until(lambda: queue_depth(settings, queue) <= backlog - eaten, 120,
                   f"the worker eating {eaten} jobs (log: {workdir})")
        waits_s: list[float] = []
        lock = threading.Lock()

        def submit_and_wait(i: int) -> None:
            began = time.perf_counter()
            handle = client.submit("embed", f"urgent {tag} {i}", priority=high)
            result = handle.result(timeout_s=args.timeout_s)
            if result.output is None:
                raise SystemExit(f"high job {result.job_id} ended {result.status}: {result.error}")
            with lock:
                waits_s.append(time.perf_counter() - began)

        with ThreadPoolExecutor(args.highs) as pool:
            futures = []
            for i in range(args.highs):
                futures.append(pool.submit(submit_and_wait, i))
                time.sleep(args.high_gap_ms / 1000)
            for future in futures:
                future.result()
        left = queue_depth(settings, queue)
    finally:
        stop_worker(worker)
        purge(settings, queue)
    scenario = Scenario(backlog, order, waits_s, left)
    print(f"  {order:8} backlog {backlog}: high p50 {scenario.percentile_s(0.5):.3f} s, "
          f"p99 {scenario.percentile_s(0.99):.3f} s, backlog left {left}", flush=True)
    return scenario


@dataclass
class Sustained:
    design: str
    high_done_before_low: int
    low_wait_s: float
    high_per_s: float


def single_queue_client(settings: Settings) -> Client:
    """A client that publishes as before the bands: every priority into the model's priority
    queue (a topology without low bands), the baseline of the fairness figures."""
    client = Client(settings)
    client.topology = replace(client.topology, low_bands={})
    return client


def run_sustained(settings: Settings, client: Client, args: argparse.Namespace, bands: bool,
                  workdir: Path) -> Sustained:
    """One run of the "sustained p9 + one p0" case (see the module's docstring)."""
    queue = QueueNames(settings.namespace).for_model("embed", "noop")
    tag = uuid.uuid4().hex[:6]
    design = "bands" if bands else "today"
    submit_backlog(client, args.sustained, HIGH, tag, args.submit_threads)
    worker = start_process(
        [sys.executable, "-m", "infermq.cli", "worker", "--models=noop", f"--slots={args.slots}",
         "--loglevel=WARNING"], settings_env(settings), workdir / f"worker-{tag}.log")
    low_client = client if bands else single_queue_client(settings)
    try:
        quarter = args.sustained // 4
        wait_until(lambda: queue_depth(settings, queue) <= args.sustained - quarter, 120,
                   f"the worker eating {quarter} jobs (log: {workdir})")
        with client.engine.connect() as connection:
            mark = connection.execute(select(func.max(job_transitions.c.id))).scalar() or 0
        began = time.perf_counter()
        low = low_client.submit("embed", f"starved {tag}", priority=0)
        low_ids = {low.id, *(low_client.submit("embed", f"starved {tag} {i}", priority=0).id
                             for i in range(args.lows))}
        low.result(timeout_s=args.timeout_s)
        low_wait_s = time.perf_counter() - began
        # Priority-9 throughput is read over THROUGHPUT_JOBS of them after the submit.
        wait_until(lambda: queue_depth(settings, queue)
                   <= args.sustained - quarter - THROUGHPUT_JOBS - args.slots, 300,
                   f"{THROUGHPUT_JOBS} more priority-9 jobs done (log: {workdir})")
    finally:
        stop_worker(worker)
        purge(settings, queue)
        purge(settings, QueueNames.low_band(queue))
        if low_client is not client:
            low_client.close()
    with client.engine.connect() as connection:
        rows = connection.execute(
            select(job_transitions.c.job_id, job_transitions.c.at)
            .where(job_transitions.c.status == "done", job_transitions.c.id > mark)
            .order_by(job_transitions.c.id)).all()
    ids = [job_id for job_id, _ in rows]
    # The priority-9 jobs done before it (the other priority-0 jobs not counted).
    position = len([job_id for job_id in ids[:ids.index(low.id)] if job_id not in low_ids])
    high = [at for job_id, at in rows if job_id not in low_ids][:THROUGHPUT_JOBS]
    window_s = max(1e-9, (high[-1] - high[0]).total_seconds())
    result = Sustained(design, position, low_wait_s, (len(high) - 1) / window_s)
    with client.engine.begin() as connection:
        connection.execute(job_transitions.delete())
    print(f"  {design:6} sustained {args.sustained}: {position} priority-9 jobs done before the "
          f"priority-0 job (wait {low_wait_s:.2f} s, p9 {result.high_per_s:.0f} jobs/s)",
          flush=True)
    return result


def print_sustained(runs: list[Sustained], args: argparse.Namespace) -> None:
    print(f"\nsustained priority-9 load ({args.sustained} queued, the worker with {args.slots} "
          f"slots on the noop engine) and one priority-0 job (+{args.lows} behind it)\n")
    print(f"{'design':7} {'p9 done before p0':>18} {'p0 wait s':>10} {'p9 jobs/s':>10}")
    for r in runs:
        print(f"{r.design:7} {r.high_done_before_low:18d} {r.low_wait_s:10.2f} "
              f"{r.high_per_s:10.0f}")
    by = {r.design: r for r in runs}
    today, bands = by["today"], by["bands"]
    print(f"\nbands / today: p9 done before p0 "
          f"{bands.high_done_before_low / max(1, today.high_done_before_low):.4f}x, p0 wait "
          f"{bands.low_wait_s / today.low_wait_s:.3f}x, p9 throughput "
          f"{bands.high_per_s / today.high_per_s:.2f}x")


def plot_sustained(runs: list[Sustained], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (done, rate) = plt.subplots(1, 2, figsize=(8, 4))
    labels = [r.design for r in runs]
    done.bar(labels, [r.high_done_before_low for r in runs], color="#d62728")
    done.set_ylabel("priority-9 jobs done before the priority-0 job")
    rate.bar(labels, [r.high_per_s for r in runs], color="#1f77b4")
    rate.set_ylabel("priority-9 jobs/s meanwhile")
    figure.suptitle("One priority-0 job under sustained priority-9 load")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"\nplot saved to {path}")


def print_table(scenarios: list[Scenario], args: argparse.Namespace) -> None:
    print(f"\nwait of {args.highs} high-priority jobs (submit to result), worker with "
          f"{args.slots} slots on the noop engine\n")
    print(f"{'backlog':>8} {'order':9} {'p50 s':>8} {'p99 s':>8} {'backlog left':>13}")
    for s in scenarios:
        print(f"{s.backlog:8d} {s.order:9} {s.percentile_s(0.5):8.3f} {s.percentile_s(0.99):8.3f} "
              f"{s.backlog_left:13d}")
    by = {(s.backlog, s.order): s for s in scenarios}
    backlogs = sorted({s.backlog for s in scenarios})
    print("\nratios:")
    for backlog in backlogs:
        fifo, prio = by[(backlog, "FIFO")], by[(backlog, "priority")]
        print(f"  backlog {backlog:6d}: FIFO / priority p50 = "
              f"{fifo.percentile_s(0.5) / prio.percentile_s(0.5):7.1f}x, p99 = "
              f"{fifo.percentile_s(0.99) / prio.percentile_s(0.99):7.1f}x")
    if len(backlogs) > 1:
        small, large = by[(backlogs[0], "priority")], by[(backlogs[-1], "priority")]
        print(f"  priority, backlog {backlogs[-1]} / {backlogs[0]}: p50 "
              f"{large.percentile_s(0.5) / small.percentile_s(0.5):.2f}x, p99 "
              f"{large.percentile_s(0.99) / small.percentile_s(0.99):.2f}x "
              f"(1.0 = independent of the backlog)")


def plot(scenarios: list[Scenario], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    labels = [f"{s.backlog:,}\n{s.order}" for s in scenarios]
    positions = range(len(scenarios))
    axis.bar([p - 0.2 for p in positions], [s.percentile_s(0.5) for s in scenarios], 0.4,
             label="p50", color="#1f77b4")
    axis.bar([p + 0.2 for p in positions], [s.percentile_s(0.99) for s in scenarios], 0.4,
             label="p99", color="#ff7f0e")
    axis.set_xticks(list(positions), labels)
    axis.set_yscale("log")
    axis.set_ylabel("high-priority wait, s (log)")
    axis.set_title("High-priority jobs behind a low-priority backlog (real broker path)")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"\nplot saved to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlogs", default="1000,10000")
    parser.add_argument("--highs", type=int, default=40)
    parser.add_argument("--high-gap-ms", type=float, default=25.0)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument("--submit-threads", type=int, default=8)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--task-events", action="store_true")
    parser.add_argument("--sustained", type=int, default=2000,
                        help="priority-9 jobs of the sustained case; 0 skips it")
    parser.add_argument("--lows", type=int, default=0,
                        help="more priority-0 jobs behind the measured one")
    parser.add_argument("--out", type=Path, default=OUT / "priority.png")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="priority-bench-"))
    scenarios: list[Scenario] = []
    sustained: list[Sustained] = []
    with bench_settings(args, workdir) as settings:
        client = Client(settings)
        try:
            for backlog in (int(b) for b in args.backlogs.split(",") if b):
                for honour_priority in (True, False):
                    scenarios.append(run_scenario(settings, client, args, backlog,
                                                  honour_priority, workdir))
            if args.sustained:
                for bands in (False, True):
                    sustained.append(run_sustained(settings, client, args, bands, workdir))
        finally:
            client.close()
            delete_queues(settings, [])
    if scenarios:
        print_table(scenarios, args)
        plot(scenarios, args.out)
    if sustained:
        print_sustained(sustained, args)
        plot_sustained(sustained, args.out.with_name("priority_sustained.png"))


if __name__ == "__main__":
    main()
