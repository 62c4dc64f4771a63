"""Confirmed publishes per second: infermq's publisher (kombu, Celery's message) against pika.

Both publish the same Celery task message to the same durable queue, persistent, ``mandatory``
and confirmed one at a time (a submit returns only after its confirm), from 1 and from 8
threads, in alternating rounds so both see the same machine load. The pika side is
``BlockingConnection`` with ``confirm_delivery`` and one connection per thread: what a pika
publisher without private attributes can do (it has no confirm timeout; infermq's has one).
Prints publishes/s, CPU µs per publish of this process and the ratio, and saves a plot to
bench/out/publisher.png::

    python bench/publisher.py                  # 3 rounds of 3 s per side and thread count
    python bench/publisher.py --rounds 1 --round-s 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pika
from celery import Celery
from kombu import Connection

from infermq.keys import RUN_JOB_TASK, QueueNames
from infermq.registry import load_registry
from infermq.settings import Settings
from producer.publisher import ORIGIN, ConfirmedPublisher, delete_topology
from routing.topology import build_topology

OUT = Path(__file__).parent / "out"
KWARGS = {"message": {"job_id": "x", "task_type": "embed", "model": "echo",
                      "input": "a sentence of a typical length for an embedding job"}}


def pika_publisher(settings: Settings, exchange: str, routing_key: str) -> Callable[[], None]:
    """One thread's pika publish: its own BlockingConnection, confirms on."""
    amqp = Celery("bench-pika", set_as_current=False).amqp
    local = threading.local()

    def publish() -> None:
        if not hasattr(local, "channel"):
            local.connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
            local.channel = local.connection.channel()
            local.channel.confirm_delivery()
        task_id = str(uuid.uuid4())
        message = amqp.as_task_v2(task_id, RUN_JOB_TASK, kwargs=KWARGS, argsrepr="()",
                                  kwargsrepr=f"{{job {task_id}}}", origin=ORIGIN,
                                  ignore_result=True)
        local.channel.basic_publish(
            exchange, routing_key, json.dumps(message.body).encode(),
            pika.BasicProperties(content_type="application/json", content_encoding="utf-8",
                                 delivery_mode=2, priority=5, correlation_id=task_id,
                                 message_id=task_id, headers=message.headers),
            mandatory=True)

    return publish


def run_round(publish: Callable[[], None], threads: int, seconds: float) -> tuple[float, float]:
    """(publishes per second, CPU µs of this process per publish) over ``seconds``."""
    counts = [0] * threads
    stop = threading.Event()

    def loop(index: int) -> None:
        while not stop.is_set():
            publish()
            counts[index] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    total = sum(counts)
    return total / wall, cpu / total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--round-s", type=float, default=3.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()

    settings = Settings(namespace=f"benchpub{uuid.uuid4().hex[:8]}")
    names = QueueNames(settings.namespace)
    topology = build_topology(load_registry(settings.registry_path), names,
                              settings.queue_max_length)
    queue = topology.job_queues[0]
    ours = ConfirmedPublisher(settings, topology)

    def kombu_publish() -> None:
        ours.publish(queue, RUN_JOB_TASK, str(uuid.uuid4()), kwargs=KWARGS, priority=5)

    kombu_publish()  # declares the topology
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for threads in args.threads:
            sides = {"infermq (kombu)": kombu_publish,
                     "pika": pika_publisher(settings, names.exchange, queue.routing_key)}
            for _ in range(args.rounds):
                for side, publish in sides.items():
                    results.setdefault((side, threads), []).append(
                        run_round(publish, threads, args.round_s))
    finally:
        ours.close()
        with Connection(settings.broker_url) as connection:
            delete_topology(connection.default_channel, topology)

    print(f"\nconfirmed publishes, {args.rounds} rounds of {args.round_s} s "
          "(median of rounds)\n")
    print("| threads | side | publishes/s | CPU µs / publish | vs pika |")
    print("| --- | --- | --- | --- | --- |")
    medians: dict[tuple[str, int], tuple[float, float]] = {
        key: (statistics.median(r for r, _ in rounds), statistics.median(c for _, c in rounds))
        for key, rounds in results.items()}
    for threads in args.threads:
        pika_rate = medians[("pika", threads)][0]
        for side in ("infermq (kombu)", "pika"):
            rate, cpu = medians[(side, threads)]
            print(f"| {threads} | {side} | {rate:,.0f} | {cpu:,.0f} | {rate / pika_rate:.2f}x |")
    save_plot(medians, args.threads)


def save_plot(medians: dict[tuple[str, int], tuple[float, float]], threads: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    OUT.mkdir(exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 4))
    width = 0.38
    for offset, side in ((-width / 2, "infermq (kombu)"), (width / 2, "pika")):
        axis.bar([i + offset for i in range(len(threads))],
                 [medians[(side, t)][0] for t in threads], width, label=side)
    axis.set_xticks(range(len(threads)), [f"{t} thread(s)" for t in threads])
    axis.set_ylabel("confirmed publishes / s")
    axis.set_title("one publisher: kombu + Celery's message vs pika")
    axis.legend()
    path = OUT / "publisher.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"\nplot: {path}")
    with contextlib.suppress(Exception):
        plt.close(figure)


if __name__ == "__main__":
    main()
