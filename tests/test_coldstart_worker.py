"""The worker's model loads, driven by the cold-start scheduler: within the device memory
budget the highest-priority models load at start and only their queues are consumed; the others
load when their jobs wait, evicting the least recently used idle model, and a job whose model
is not READY in the worker is given back to RabbitMQ uncounted; a model whose load fails is
retried, given up on, and does not stop the worker from serving the others."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery.exceptions import Reject

from infermq.keys import RUN_JOB_TASK, QueueNames, RedisKeys
from infermq.registry import load_registry
from infermq.settings import Settings
from producer.client import Client
from routing.coldstart import Evict, InstanceState, StartLoad
from stores.connections import get_redis
from stores.jobstore import get_job
from stores.live_metrics import read_snapshots
from tests.conftest import base_settings
from tests.support import WorkerProcess, delete_namespace, queue_depth, take_job_message
from tests.test_lose_nothing import open_gate, wait_at_gate
from tests.test_scale_drain import consumers_of
from tests.test_worker_metrics import wait_for_snapshot
from workers.celery_app import create_app
from workers.runtime import WorkerRuntime, admit_models
from workers.tasks import register_tasks

COLDSTART_REGISTRY = Path(__file__).parent / "data" / "registry_coldstart.toml"
WAIT_S = 120
STATE_LINE = re.compile(r"model (\S+) is now (\S+)")


def model_states(log: str) -> list[tuple[str, str]]:
    """The state changes a worker logged, in order (``WorkerRuntime._set_state``)."""
    return [(m.group(1), m.group(2)) for m in STATE_LINE.finditer(log)]


def wait_for_log(worker: WorkerProcess, text: str) -> None:
    """Waits until the worker has logged ``text`` (it writes its log as it goes)."""
    deadline = time.monotonic() + WAIT_S
    pause = threading.Event()
    while text not in worker.log():
        assert time.monotonic() < deadline, f"the worker did not log {text!r} in {WAIT_S} s"
        pause.wait(0.1)


@pytest.fixture
def coldstart_settings(database_schema: str) -> Iterator[Settings]:
    settings = base_settings(database_schema=database_schema, registry_path=COLDSTART_REGISTRY,
                             model_load_attempts=2, model_load_backoff_s=0.0)
    yield settings
    delete_namespace(settings)


def test_admission_takes_models_by_priority_while_they_fit() -> None:
    specs = list(load_registry(COLDSTART_REGISTRY).models.values())
    assert [s.name for s in admit_models(specs, 250)] == ["broken", "first"]
    assert [s.name for s in admit_models(specs, None)] == ["broken", "first", "second", "third"]
    # a model too big for what is left is skipped, not a blocker of smaller ones after it
    no_broken = [s for s in specs if s.name != "broken"]
    big = no_broken[0].model_copy(update={"memory_mib": 500, "load_priority": 9})
    assert [s.name for s in admit_models([big, *no_broken[1:]], 250)] == ["second", "third"]


def test_a_budget_for_two_of_three_models_serves_the_two_highest_priorities(
    coldstart_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    settings = coldstart_settings.model_copy(update={"device_memory_mib": 250})
    client = client_for(settings)
    jobs = {model: client.submit("generate", f"hello {model}", model=model)
            for model in ("first", "second")}
    worker = start_worker(settings, ["third", "second", "first"])

    for model in ("first", "second"):
        result = jobs[model].result(timeout_s=WAIT_S)
        assert result.status == "done", result
    # the worker consumes its start queues at once, which its two results prove is past; the
    # third model, with no job waiting, is not loaded
    third = client.topology.queue_for("generate", "third").name
    assert consumers_of(settings, third) == 0
    assert ("third", "LOADING") not in model_states(worker.log())


def test_a_model_that_fails_to_load_does_not_stop_the_others(
    coldstart_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(coldstart_settings)
    broken_job = client.submit("generate", "hello broken", model="broken")
    served_job = client.submit("generate", "hello first", model="first")
    worker = start_worker(coldstart_settings, ["broken", "first"])

    assert served_job.result(timeout_s=WAIT_S).status == "done"
    assert worker.process.poll() is None
    broken = client.topology.queue_for("generate", "broken").name
    assert consumers_of(coldstart_settings, broken) == 0
    assert broken_job.status() == "queued"
    log = worker.log()
    assert "model broken failed to load (attempt 1); will retry" in log
    assert "model broken failed to load (attempt 2); giving up on it" in log


def test_a_job_whose_model_is_not_ready_here_is_requeued_before_its_attempt_is_counted(
    coldstart_settings: Settings,
    client_for: Callable[[Settings], Client],
) -> None:
    # Given a runtime whose budget fits one of its two models: first is READY, second is not
    settings = coldstart_settings.model_copy(update={"device_memory_mib": 100})
    runtime = WorkerRuntime(settings, ["first", "second"])
    runtime.start()
    app = create_app(settings)
    register_tasks(app, runtime)
    run_job = app.tasks[RUN_JOB_TASK]
    client = client_for(settings)
    try:
        assert runtime.state("first") == InstanceState.READY
        assert runtime.state("second") is None
        waiting = client.submit("generate", "hello second", model="second")
        served = client.submit("generate", "hello first", model="first")

        # When the task gets second's message (as from a cancelled consumer's prefetch buffer)
        message = take_job_message(settings, client.topology.queue_for("generate", "second").name)
        with pytest.raises(Reject) as rejected:
            run_job.run(message)

        # Then it is given back to RabbitMQ, uncounted and not failed
        assert rejected.value.requeue is True
        row = get_job(client.engine, waiting.id)
        assert (row.attempts, row.status) == (0, "queued")
        # while a job of the READY model runs
        run_job.run(take_job_message(settings, client.topology.queue_for("generate", "first").name))
        assert get_job(client.engine, served.id).attempts == 1
        assert served.result(timeout_s=WAIT_S).output == "hello first"
    finally:
        runtime.stop()


def test_the_runtime_evicts_only_an_idle_model_and_refuses_its_jobs_from_then_on(
    coldstart_settings: Settings,
) -> None:
    settings = coldstart_settings.model_copy(update={"device_memory_mib": 100})
    runtime = WorkerRuntime(settings, ["first", "second"])
    runtime.start()
    try:
        # Given a job of first in flight, when second is asked for: nothing is evicted yet
        assert runtime.hold_model("first")
        runtime.request_load("second")
        assert runtime.next_actions() == []

        # When that job ends, first is evicted: DRAINING, and its jobs are refused
        runtime.release_model("first")
        assert runtime.next_actions() == [Evict("first")]
        assert runtime.state("first") == InstanceState.DRAINING
        assert not runtime.hold_model("first")
        runtime.unload("first")
        assert runtime.state("first") is None and "first" not in runtime.batchers

        # Then second loads in its place and takes jobs
        assert runtime.next_actions() == [StartLoad("second", 1)]
        assert runtime.load(runtime.specs_by_name["second"], 1)
        assert runtime.hold_model("second")
        runtime.release_model("second")
    finally:
        runtime.stop()


def test_a_worker_evicts_its_idle_model_for_one_whose_jobs_wait_and_brings_it_back(
    coldstart_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    settings = coldstart_settings.model_copy(update={
        "device_memory_mib": 100, "model_demand_poll_s": 0.2, "metrics_interval_s": 0.2})
    client = client_for(settings)
    # Given a worker serving first and second whose budget fits one: first (the higher
    # priority) loads at start, and one of its jobs is held inside the engine
    worker = start_worker(settings, ["first", "second"])
    held = client.submit("generate", "gate:first-busy hello first", model="first")
    wait_at_gate(settings, "first-busy")

    # When jobs for second wait: first is not evicted while its job runs
    second_jobs = [client.submit("generate", f"hello second {i}", model="second")
                   for i in range(3)]
    wait_for_log(worker, "model second has ")
    assert ("first", "DRAINING") not in model_states(worker.log())
    # once it ends, first is evicted and second loads and serves them
    open_gate(settings, "first-busy")
    assert held.result(timeout_s=WAIT_S).status == "done"
    for i, job in enumerate(second_jobs):
        result = job.result(timeout_s=WAIT_S)
        assert (result.status, result.model, result.output) == ("done", "second",
                                                                f"hello second {i}")

    # and jobs for first bring it back, evicting second
    first_jobs = [client.submit("generate", f"hello first {i}", model="first") for i in range(2)]
    for job in first_jobs:
        assert job.result(timeout_s=WAIT_S).status == "done"

    # Then the worker went through these states, in this order
    assert model_states(worker.log()) == [
        ("first", "LOADING"), ("first", "READY"),
        ("first", "DRAINING"), ("first", "unloaded"),
        ("second", "LOADING"), ("second", "READY"),
        ("second", "DRAINING"), ("second", "unloaded"),
        ("first", "LOADING"), ("first", "READY"),
    ]
    # every job ran once, none failed or went to the dead letters
    for job in [held, *second_jobs, *first_jobs]:
        assert get_job(client.engine, job.id).attempts == 1
    assert queue_depth(settings, QueueNames(settings.namespace).dead) == 0
    # it consumes the queue of its READY model only, and publishes only that model
    topology = client.topology
    assert consumers_of(settings, topology.queue_for("generate", "first").name) == 1
    assert consumers_of(settings, topology.queue_for("generate", "second").name) == 0
    wait_for_snapshot(settings, "first", lambda s: s.state == "READY")
    keys = RedisKeys(settings.redis_prefix)
    assert read_snapshots(get_redis(settings), keys, ["second"]) == []
