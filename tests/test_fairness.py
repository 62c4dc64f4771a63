"""Fairness at the broker: a priority-0 job finishes under sustained priority-9 load.

RabbitMQ serves a priority queue strictly highest first; the low band (``<queue>.low``,
routing/topology.py) is consumed on a channel of its own (workers/low_band.py), so a low job
reaches the worker whatever the high load, and the batcher orders it there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from infermq.settings import Settings
from infermq.tables import job_transitions
from producer.client import Client
from tests.support import WorkerProcess, queue_depth
from tests.test_lose_nothing import open_gate, wait_at_gate

SLOTS = 2
BACKLOG = 3 * SLOTS
"""Priority-9 jobs queued beyond what the worker holds, topped up by one per job released."""
MAX_ROUNDS = 40


def wait_for_status(handle_status: Callable[[], str], status: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while handle_status() != status:
        assert time.monotonic() < deadline, f"the job did not reach {status} in {timeout_s} s"
        time.sleep(0.02)


@pytest.mark.timeout(300)
def test_priority_0_job_finishes_while_every_slot_serves_priority_9(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    # Given a worker (2 high-band slots, 1 low-band slot) whose every slot holds a priority-9
    # job at the engine's gate, with more priority-9 jobs ready in the queue throughout
    settings = echo_settings.model_copy(update={"worker_low_slots": 1})
    client = client_for(settings)
    high_queue = client.topology.queue_for("embed", "echo", 9).name
    submitted = 0

    def submit_high() -> None:
        nonlocal submitted
        client.submit("embed", f"gate:hot p9 {submitted}", priority=9)
        submitted += 1

    for _ in range(SLOTS + BACKLOG):
        submit_high()
    start_worker(settings, ["echo"], slots=SLOTS)
    wait_at_gate(settings, "hot")

    # When a priority-0 job is submitted and reaches the worker while the engine is held
    low = client.submit("embed", "cold p0", priority=0)
    wait_for_status(low.status, "running", 60)
    with client.engine.connect() as connection:
        mark = connection.execute(
            select(job_transitions.c.id).order_by(job_transitions.c.id.desc()).limit(1)
        ).scalar_one()

    # and the priority-9 jobs are released one at a time, each replaced by a new one first
    rounds = 0
    while low.status() != "done":
        assert rounds < MAX_ROUNDS, f"the priority-0 job waited past {rounds} priority-9 jobs"
        submit_high()
        assert queue_depth(settings, high_queue) > 0  # the load is sustained
        open_gate(settings, "hot")
        rounds += 1
        wait_at_gate(settings, "hot")

    # Then it finished with priority-9 jobs still ready and every slot busy, within the bound:
    # the batch running when it arrived, and one batch ahead of it (the engine batches all the
    # worker holds here), so at most 2 x slots priority-9 jobs committed after it was held.
    assert queue_depth(settings, high_queue) >= BACKLOG - 1
    with client.engine.connect() as connection:
        done = connection.execute(
            select(job_transitions.c.job_id)
            .where(job_transitions.c.status == "done", job_transitions.c.id > mark)
            .order_by(job_transitions.c.id)
        ).scalars().all()
    assert low.id in done
    high_before_low = done.index(low.id)
    assert high_before_low <= 2 * SLOTS, done
    assert low.result(timeout_s=30).output is not None
    # Release what is still held, so the worker stops quickly.
    open_gate(settings, "hot", times=submitted + SLOTS)
