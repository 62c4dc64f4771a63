"""Where a priority-0 job stands behind priority-9 work at the broker, today (issue 15, item 2).

RabbitMQ serves a priority queue highest first, so while priority-9 jobs are ready a
priority-0 job is never delivered. Through the real path (``Client.submit``, a worker process
on the ``noop`` engine, prefetch 1 per slot), for each size N:

  1. with the worker stopped, one priority-0 job is submitted, then N priority-9 jobs;
  2. the worker starts and drains the queue;
  3. the figure is a count, not a time: how many priority-9 jobs committed ``done`` before the
     priority-0 job (the order of their ``done`` transitions in PostgreSQL). The p0 wait and
     the p9 p50/p99 (from the run's first ``done`` to each ``done``, PostgreSQL's clock) are
     printed beside it.

Today the count is N for every N (no bound: under sustained priority-9 load the job waits for
ever). The "today" column publishes the priority-0 job into the model's priority queue (a
topology without low bands: the single queue of before); the "band queue" column submits it
through the product, to the low band ``<queue>.low`` that the worker consumes on a channel of
its own (workers/low_band.py); its count must not grow with N::

    python bench/starvation.py                  # N = 500 and 2,000
    python bench/starvation.py --sizes 200

Prints a table with the ratios and saves bench/out/starvation.png. Cleans up its queues, Redis
keys and PostgreSQL schema (``bench/pipeline_overhead.py`` provides the isolation).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline_overhead import (
    bench_settings,
    delete_queues,
    settings_env,
    start_process,
    stop_worker,
)
from priority import purge, single_queue_client, submit_backlog
from sqlalchemy import select

from infermq.keys import QueueNames
from infermq.settings import Settings
from infermq.tables import job_transitions
from producer.client import Client

OUT = Path(__file__).parent / "out"
LOW, HIGH = 0, 9


@dataclass
class Starvation:
    size: int
    design: str
    served_before_low: int
    low_wait_s: float
    high_waits_s: list[float]

    def high_percentile_s(self, share: float) -> float:
        ordered = sorted(self.high_waits_s)
        return ordered[round(share * (len(ordered) - 1))]


def run_size(settings: Settings, client: Client, args: argparse.Namespace, size: int,
             band_queue: bool, workdir: Path) -> Starvation:
    tag = uuid.uuid4().hex[:6]
    node = f"starve{tag}@{socket.gethostname()}"
    low_client = client if band_queue else single_queue_client(settings)
    low = low_client.submit("embed", f"starved {tag}", priority=LOW)
    if low_client is not client:
        low_client.close()
    submit_backlog(client, size, HIGH, tag, args.submit_threads)
    worker = start_process(
        [sys.executable, "-m", "infermq.cli", "worker", "--models=noop", f"--slots={args.slots}",
         f"--hostname={node}", "--loglevel=WARNING"], settings_env(settings),
        workdir / f"worker-{tag}.log")
    mark = 0
    try:
        low.result(timeout_s=args.timeout_s)
    finally:
        stop_worker(worker)
        # Whatever a fairer design left undone of the priority-9 jobs must not run in the next
        # size's count.
        purge(settings, QueueNames(settings.namespace).for_model("embed", "noop"))
    with client.engine.connect() as connection:
        rows = connection.execute(
            select(job_transitions.c.job_id, job_transitions.c.status, job_transitions.c.at)
            .where(job_transitions.c.status == "done", job_transitions.c.id > mark)
            .order_by(job_transitions.c.id)).all()
    done = [(job_id, at) for job_id, _status, at in rows]
    position = [job_id for job_id, _ in done].index(low.id)
    # The worker's start, as near as PostgreSQL's clock tells it: the run's first done.
    started = done[0][1]
    scenario = Starvation(size, "band queue" if band_queue else "today", position,
                          (done[position][1] - started).total_seconds(),
                          [(at - started).total_seconds() for job_id, at in done
                           if job_id != low.id])
    with client.engine.begin() as connection:
        connection.execute(job_transitions.delete())
    print(f"  {scenario.design:10} N {size}: {position} priority-9 jobs done before the "
          f"priority-0 job (p0 wait {scenario.low_wait_s:.2f} s)", flush=True)
    return scenario


def print_table(scenarios: list[Starvation], args: argparse.Namespace) -> None:
    print(f"\npriority-0 job submitted first, then N priority-9 jobs; worker with {args.slots} "
          "slots on the noop engine (today: strict broker priority)\n")
    print(f"{'N':>6} {'design':11} {'p9 before p0':>13} {'p0 wait s':>10} {'p9 p50 s':>9} "
          f"{'p9 p99 s':>9}")
    for s in scenarios:
        # The worker stops once the priority-0 job is done: only today's run drains the whole
        # priority-9 backlog, so only its p9 figures say what priority-9 work pays.
        p9 = (f"{s.high_percentile_s(0.5):9.2f} {s.high_percentile_s(0.99):9.2f}"
              if s.design == "today" else f"{'-':>9} {'-':>9}")
        print(f"{s.size:6d} {s.design:11} {s.served_before_low:13d} {s.low_wait_s:10.2f} {p9}")
    for design in ("today", "band queue"):
        runs = [s for s in scenarios if s.design == design]
        if len(runs) > 1:
            small, large = runs[0], runs[-1]
            print(f"\n{design}, ratio N {large.size} / N {small.size}: p9 served before p0 "
                  f"{large.served_before_low / max(1, small.served_before_low):.2f}x, p0 wait "
                  f"{large.low_wait_s / max(1e-9, small.low_wait_s):.2f}x (1.0 = bounded)")
    for size in sorted({s.size for s in scenarios}):
        by = {s.design: s for s in scenarios if s.size == size}
        if len(by) == 2:
            today, band = by["today"], by["band queue"]
            print(f"N {size}: band queue / today, p9 served before p0 "
                  f"{band.served_before_low / max(1, today.served_before_low):.3f}x")


def plot(scenarios: list[Starvation], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    positions = range(len(scenarios))
    axis.bar(list(positions), [s.served_before_low for s in scenarios], 0.5, color="#d62728",
             label="priority-9 jobs done before the priority-0 job")
    axis.plot(list(positions), [s.size for s in scenarios], "k--", marker="o",
              label="N (every priority-9 job)")
    axis.set_xticks(list(positions), [f"N={s.size:,}\n{s.design}" for s in scenarios])
    axis.set_ylabel("jobs")
    axis.set_title("A priority-0 job behind priority-9 work")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"\nplot saved to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,2000")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument("--submit-threads", type=int, default=8)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--task-events", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT / "starvation.png")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="starvation-bench-"))
    scenarios: list[Starvation] = []
    with bench_settings(args, workdir) as settings:
        client = Client(settings)
        try:
            for size in (int(s) for s in args.sizes.split(",")):
                for band_queue in (False, True):
                    scenarios.append(run_size(settings, client, args, size, band_queue,
                                              workdir))
        finally:
            client.close()
            delete_queues(settings, [])
    print_table(scenarios, args)
    plot(scenarios, args.out)


if __name__ == "__main__":
    main()
