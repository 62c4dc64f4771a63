"""The live cache audit: decisions, durable counts, the fleet-wide switch, eviction, the CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from infermq.audit_policy import AuditCounts, answers_agree, breached, picked_for_audit
from infermq.jobs import JobMessage, TaskType
from infermq.settings import Settings
from infermq.tables import job_transitions
from producer.client import Client, JobHandle
from stores.cache_audit_store import CacheAuditStore
from stores.database import get_engine
from tests.conftest import base_settings
from tests.support import WorkerProcess, delete_namespace
from tests.test_coldstart_worker import wait_for_log
from workers.cache_audit import AUDIT_PRIORITY, CacheAudit
from workers.cache_steps import CacheSteps
from workers.engines.base import EngineOutput, EngineRequest

pytestmark = pytest.mark.timeout(300)


def test_breach_needs_the_lower_bound_above_the_target() -> None:
    # 1 wrong in 400 audited: the interval still holds 0.5 %, the tier stays on.
    assert not breached(AuditCounts(agreed=399, disagreed=1), 0.005)
    # 10 wrong in 400: the lower bound (1.2 %) is above 0.5 %.
    assert breached(AuditCounts(agreed=390, disagreed=10), 0.005)
    # Audits that could not run are evidence of nothing.
    assert not breached(AuditCounts(starved=50, failed=50), 0.005)


def test_the_audit_share_holds_and_a_redelivery_is_picked_alike() -> None:
    ids = [f"job-{i}" for i in range(20_000)]
    picked = sum(picked_for_audit(i, 0.05) for i in ids)
    assert 850 <= picked <= 1150
    assert [picked_for_audit(i, 0.05) for i in ids[:200]] == [
        picked_for_audit(i, 0.05) for i in ids[:200]]
    assert not any(picked_for_audit(i, 0.0) for i in ids[:200])


def test_answers_agree_on_labels_and_on_normalized_text() -> None:
    assert answers_agree("classify", {"label": "refund", "score": 0.9},
                         {"label": "refund", "score": 0.7})
    assert not answers_agree("classify", {"label": "refund"}, {"label": "cancel"})
    assert answers_agree("generate", "Paris is the capital.", "  paris is the capital ")
    assert not answers_agree("generate", "It costs 2.5 dollars.", "It costs 25 dollars.")


class StandInEngine:
    """The worker's batcher as the audit sees it: answers each request with ``answer``."""

    def __init__(self, answer: Any) -> None:
        self.answer, self.requests = answer, []  # type: ignore[var-annotated]

    def __call__(self, model: str, request: EngineRequest) -> Future[EngineOutput]:
        self.requests.append(request)
        future: Future[EngineOutput] = Future()
        future.set_result(EngineOutput(output=self.answer))
        return future


def message(text: str, task_type: TaskType = TaskType.GENERATE, model: str = "smollm2"
            ) -> JobMessage:
    return JobMessage(job_id=str(uuid.uuid4()), task_type=task_type, model=model,
                      input=text, priority=5, timeout_s=30, submitted_at=datetime.now(UTC))


@pytest.fixture
def embed() -> Any:
    from sentence_transformers import SentenceTransformer

    from workers.engines.sources import MINILM_DIR, package_path

    model = SentenceTransformer(str(package_path(*MINILM_DIR)), device="cpu")
    return lambda texts: np.asarray(model.encode(texts, normalize_embeddings=True))


def two_workers(settings: Settings, embed: Any) -> tuple[CacheSteps, CacheSteps]:
    first, second = CacheSteps(settings), CacheSteps(settings)
    assert first.use_embedder(embed) and second.use_embedder(embed)
    return first, second


def test_a_wrong_hit_evicts_its_entry_and_turns_the_tier_off_for_every_worker(
        settings: Settings, embed: Any) -> None:
    settings = settings.model_copy(update={"cache_audit_share": 1.0, "cache_switch_recheck_s": 0})
    worker_a, worker_b = two_workers(settings, embed)
    # Given an entry whose stored answer the engine no longer gives,
    worker_a.store(message("What is the capital city of France?"), "Lyon")
    asked = message("what's the capital of France")
    hit = worker_a.lookup(asked)
    assert hit is not None and hit.tier == "semantic"
    engine = StandInEngine("Paris")
    audit = CacheAudit(settings, worker_a.switches, worker_a.exact, engine)
    # When the audit re-runs the hit,
    future = audit.after_semantic_hit(asked, hit.entry)
    assert future is not None
    future.result(timeout=60)
    # Then it ran at the lowest priority under an id that is no user's job,
    assert [r.priority for r in engine.requests] == [AUDIT_PRIORITY]
    assert engine.requests[0].job_id == f"audit-{asked.job_id}"
    # it counted one disagreement, evicted the entry, and switched the tier off:
    counts = worker_a.switches.counts()[("generate", "smollm2")]
    assert (counts.agreed, counts.disagreed) == (0, 1)
    assert worker_a.exact.get_entry("generate", hit.entry.entry_id) is None
    assert not worker_b.switches.semantic_enabled("generate")
    # the other worker serves no semantic hit for generate, even of a fresh entry,
    worker_b.store(message("Who wrote the play Hamlet?"), "Shakespeare")
    assert worker_b.lookup(message("who is the author of hamlet")) is None
    # until an operator turns it back on.
    enabled = subprocess.run([sys.executable, "-m", "infermq.cli", "cache", "enable", "generate"],
                             env=settings.as_env() | {"PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, timeout=120)
    assert enabled.returncode == 0, enabled.stderr
    again = worker_b.lookup(message("who is the author of hamlet"))
    assert again is not None and again.tier == "semantic"
    audit.close()


def test_an_engine_that_agrees_keeps_the_tier_on(settings: Settings, embed: Any) -> None:
    settings = settings.model_copy(update={"cache_audit_share": 1.0})
    worker_a, worker_b = two_workers(settings, embed)
    worker_a.store(message("What is the capital city of France?"), "Paris.")
    audit = CacheAudit(settings, worker_a.switches, worker_a.exact, StandInEngine("paris"))
    for _ in range(5):
        asked = message("what's the capital of France")
        hit = worker_b.lookup(asked)
        assert hit is not None and hit.tier == "semantic"
        future = audit.after_semantic_hit(asked, hit.entry)
        assert future is not None
        future.result(timeout=60)
    counts = worker_b.switches.counts()[("generate", "smollm2")]
    assert (counts.agreed, counts.disagreed, counts.failed) == (5, 0, 0)
    assert worker_b.switches.semantic_enabled("generate")
    audit.close()


def test_a_worker_reads_the_switch_once_per_recheck_interval(settings: Settings) -> None:
    # Given two workers' views of the switches, one allowed an hour-old reading,
    database = get_engine(settings)
    turner = CacheAuditStore(database, settings.namespace, switch_recheck_s=3600)
    reader = CacheAuditStore(database, settings.namespace, switch_recheck_s=3600)
    assert reader.semantic_enabled("classify") and turner.semantic_enabled("classify")
    # when one turns classify off, it obeys at once, the other within its interval (not yet),
    turner.set_semantic("classify", False, "test")
    assert not turner.semantic_enabled("classify")
    assert reader.semantic_enabled("classify")
    # and from the re-read that the interval (here the hook) brings on.
    reader.recheck_switches()
    assert not reader.semantic_enabled("classify")
    assert reader.semantic_enabled("generate")
    # With no interval, every look-up reads PostgreSQL.
    every_lookup = CacheAuditStore(database, settings.namespace, switch_recheck_s=0)
    turner.set_semantic("classify", True, "test")
    assert every_lookup.semantic_enabled("classify")


AUDIT_REGISTRY = Path(__file__).parent / "data" / "registry_audit.toml"
WAIT_S = 120
# 4 of 4 audits wrong is the first count whose interval's lower bound (0.025 ** (1/4) = 0.398)
# is above this target; 3 of 3 (0.292) is not: the tier must stay on through three.
TRIP_TARGET = 0.3


@pytest.fixture
def audit_settings(database_schema: str) -> Iterator[Settings]:
    settings = base_settings(database_schema=database_schema, registry_path=AUDIT_REGISTRY,
                             cache_switch_recheck_s=0)
    yield settings
    delete_namespace(settings)


def wait_for_counts(store: CacheAuditStore, task_type: str, model: str,
                    compared: int) -> AuditCounts:
    """Waits until the background audits have compared ``compared`` answers in all."""
    deadline = time.monotonic() + WAIT_S
    pause = threading.Event()
    while True:
        counts = store.counts().get((task_type, model), AuditCounts())
        if counts.compared >= compared:
            return counts
        assert time.monotonic() < deadline, f"audit counts stuck at {counts}"
        pause.wait(0.1)


@pytest.mark.timeout(600)
def test_two_worker_processes_obey_the_audit_and_the_operator(
        audit_settings: Settings, embed: Any, start_worker: Callable[..., WorkerProcess],
        client_for: Callable[[Settings], Client]) -> None:
    """Worker A audits every semantic hit; worker B (its own model, audits off) only obeys."""
    settings_a = audit_settings.model_copy(update={"cache_audit_share": 1.0,
                                                   "cache_audit_target": TRIP_TARGET})
    settings_b = audit_settings.model_copy(update={"cache_audit_share": 0.0})
    workers = [start_worker(settings_a, ["minilm", "scripted"]),
               start_worker(settings_b, ["minilm", "scripted-b"])]
    for worker in workers:
        wait_for_log(worker, "semantic cache tier on")
    client = client_for(audit_settings)
    # The test writes the entries the workers then serve: a wrong one (the engine echoes the
    # asked text, never "wrong answer ..."), or one the engine gives too (classify's "test").
    seeder = CacheSteps(audit_settings)
    assert seeder.use_embedder(embed)
    store = CacheAuditStore(get_engine(audit_settings), audit_settings.namespace)
    handles: list[JobHandle] = []

    def ask(task_type: str, text: str, model: str) -> Any:
        handle = client.submit(task_type, text, model=model)
        handles.append(handle)
        return handle.result(timeout_s=WAIT_S)

    # B serves semantic hits for generate while the tier is on.
    seeder.store(message("How many legs does a spider have?", model="scripted-b"), "eight")
    assert ask("generate", "how many legs do spiders have", "scripted-b").cache == "semantic"

    # An engine that gives the cached answer (classify's label is always "test", and the
    # worker cached it): the audits agree, the tier stays on.
    classify_pairs = [("I want a refund for my broken kettle", "please refund my broken kettle"),
                      ("Cancel my subscription", "please cancel my subscription"),
                      ("How do I reset my password?", "how can I reset my password")]
    for i, (stored, asked) in enumerate(classify_pairs, start=1):
        assert ask("classify", stored, "scripted").cache == "miss"
        assert ask("classify", asked, "scripted").cache == "semantic"
        counts = wait_for_counts(store, "classify", "scripted", i)
        assert (counts.agreed, counts.disagreed) == (i, 0)
    assert "classify" not in store.disabled()

    # An engine that answers otherwise than the cache: each audit counts one more wrong hit
    # and evicts its entry; the tier stays on until the lower bound passes the target.
    generate_pairs = [("What is the capital city of France?", "what's the capital of France"),
                      ("Who wrote the play Hamlet?", "who is the author of hamlet"),
                      ("What is the boiling point of water?",
                       "what temperature does water boil at"),
                      ("Who painted the Mona Lisa?", "who was the painter of the mona lisa")]
    for i, (stored, asked) in enumerate(generate_pairs, start=1):
        seeder.store(message(stored, model="scripted"), f"wrong answer {i}")
        served = ask("generate", asked, "scripted")
        assert served.cache == "semantic" and served.output == f"wrong answer {i}"
        counts = wait_for_counts(store, "generate", "scripted", i)
        assert (counts.agreed, counts.disagreed, counts.failed, counts.starved) == (0, i, 0, 0)
        if i < len(generate_pairs):
            assert "generate" not in store.disabled()
            # The wrong entry went at once: asked again, the engine answers.
            again = ask("generate", asked, "scripted")
            assert again.cache == "miss" and again.output == asked
    assert "generate" in store.disabled()

    # The other worker process now serves generate from the exact tier only,
    seeder.store(message("What colour is the sky on a clear day?", model="scripted-b"), "blue")
    assert ask("generate", "what color is the sky on a clear day", "scripted-b").cache == "miss"
    # until an operator turns the tier back on with the real CLI.
    enabled = subprocess.run([sys.executable, "-m", "infermq.cli", "cache", "enable", "generate"],
                             env=audit_settings.as_env() | {"PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, timeout=120)
    assert enabled.returncode == 0, enabled.stderr
    assert ask("generate", "on a clear day, what colour is the sky", "scripted-b").cache == (
        "semantic")

    # No user job lost or answered twice: each handle answered, one done transition each.
    ids = [handle.id for handle in handles]
    with get_engine(audit_settings).connect() as connection:
        done: dict[str, int] = dict(connection.execute(
            sa.select(job_transitions.c.job_id, sa.func.count())
            .where(job_transitions.c.job_id.in_(ids), job_transitions.c.status == "done")
            .group_by(job_transitions.c.job_id)).all())
    assert len(ids) == len(set(ids)) == 16
    assert done == dict.fromkeys(ids, 1)
