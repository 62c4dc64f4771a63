"""Sessions: the lifecycle, the context tiers, job ordering and the sweep, on real services."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from pydantic import ValidationError
from sqlalchemy import Engine, insert, select, update

from infermq.errors import (
    ConfigError,
    InvalidTransition,
    SessionConflict,
    SessionContextError,
    SessionTerminated,
)
from infermq.jobs import ChatMessage
from infermq.keys import RedisKeys
from infermq.sessions import (
    ALLOWED_TRANSITIONS,
    ContextTier,
    SessionContext,
    SessionState,
    TurnDecision,
    check_transition,
    decode_context,
    encode_context,
    next_state,
    sweep_target,
    turn_decision,
)
from infermq.settings import Settings
from infermq.tables import jobs, sessions
from stores.redis_context import RedisContextTier
from stores.session_store import SessionStore
from stores.session_sweep import sweep_sessions
from stores.session_turns import TurnGate
from tests import session_racers

OWN_REDIS_DB = 2  # the FLUSHDB test flushes this db only, never the shared one
FORBIDDEN = [(a, b) for a in SessionState for b in SessionState if b not in ALLOWED_TRANSITIONS[a]]
ALLOWED = [(a, b) for a in SessionState for b in ALLOWED_TRANSITIONS[a]]


@pytest.fixture
def store(settings: Settings, redis_client: redis.Redis, db_engine: Engine) -> SessionStore:
    return SessionStore.from_settings(settings, db_engine, redis_client)


@pytest.fixture
def gate(store: SessionStore) -> TurnGate:
    return TurnGate(store)


def set_state(engine: Engine, session_id: str, state: SessionState, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(sessions).where(sessions.c.id == session_id).values(state=state, **values)
        )


def row_of(engine: Engine, session_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(sessions).where(sessions.c.id == session_id)).one()
    return dict(row._mapping)


def take_turn(store: SessionStore, gate: TurnGate, session_id: str, text: str) -> SessionContext:
    """One job's whole session path, as the worker runs it."""
    with store.engine.begin() as conn:
        seq = gate.assign_sequence(conn, session_id)
    assert gate.wait_for_turn(session_id, seq, wait_s=10) == TurnDecision.RUN
    record = store.activate(session_id)
    context, _tier = store.load_context(session_id, record.turns)
    after = context.with_turn(
        [ChatMessage(role="user", content=text), ChatMessage(role="assistant", content=text)]
    )
    with store.engine.begin() as conn:
        assert store.append_turn(conn, session_id, seq, after, model="m", job_id=text)
    gate.notify_turn_done(session_id)
    return after


# -- pure decisions ---------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "target"), FORBIDDEN)
def test_forbidden_edge_is_refused_by_the_table(
    current: SessionState, target: SessionState
) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(current, target)


def test_next_state_is_idempotent_only_for_the_state_already_held() -> None:
    assert next_state(SessionState.ACTIVE, SessionState.ACTIVE) is None
    assert next_state(SessionState.SLEEP, SessionState.ACTIVE) == SessionState.ACTIVE
    with pytest.raises(InvalidTransition):
        next_state(SessionState.TERMINATED, SessionState.ACTIVE)


def test_sweep_target_sleeps_idle_active_and_terminates_expired() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)

    def target(state: SessionState, idle_s: float) -> SessionState | None:
        return sweep_target(state, now - timedelta(seconds=idle_s), now, 60, 3600)

    assert target(SessionState.ACTIVE, 59) is None
    assert target(SessionState.ACTIVE, 60) == SessionState.SLEEP
    assert target(SessionState.INIT, 600) is None  # INIT has no edge to SLEEP
    assert target(SessionState.SLEEP, 600) is None
    for state in (SessionState.INIT, SessionState.ACTIVE, SessionState.SLEEP):
        assert target(state, 3600) == SessionState.TERMINATED
    assert target(SessionState.TERMINATED, 10**6) is None
    with pytest.raises(ConfigError):
        sweep_target(SessionState.ACTIVE, now, now, 3600, 60)


def test_turn_decision_runs_only_the_next_seq() -> None:
    assert turn_decision(done_seq=3, seq=3) == TurnDecision.RUN
    assert turn_decision(done_seq=3, seq=4) == TurnDecision.WAIT
    assert turn_decision(done_seq=3, seq=2) == TurnDecision.ALREADY_DONE


def test_context_round_trips_as_compressed_json_and_refuses_non_json() -> None:
    context = SessionContext().with_turn(
        [ChatMessage(role="user", content="héllo")], engine_state={"kv_tokens": [1, 2]}
    )
    assert decode_context(encode_context(context)) == context
    with pytest.raises(ValidationError):
        SessionContext(engine_state={"tensor": object()})  # type: ignore[dict-item]
    with pytest.raises(SessionContextError):
        decode_context(b"not zlib")
    with pytest.raises(SessionContextError):
        decode_context(zlib.compress(b'{"format_version": 2}'))


# -- lifecycle in PostgreSQL ----------------------------------------------------------------


@pytest.mark.parametrize(("current", "target"), FORBIDDEN)
def test_forbidden_transition_raises_and_changes_nothing(
    store: SessionStore, gate: TurnGate, current: SessionState, target: SessionState
) -> None:
    # Given a session with a context, in state `current`
    session_id = store.create().id
    take_turn(store, gate, session_id, "kept")
    set_state(store.engine, session_id, current)
    before = row_of(store.engine, session_id)
    # When the forbidden edge is asked for, Then it raises and the row is untouched
    with pytest.raises(InvalidTransition):
        store.transition(session_id, target)
    assert row_of(store.engine, session_id) == before


@pytest.mark.parametrize(("current", "target"), ALLOWED)
def test_allowed_transition_moves_state_and_bumps_version(
    store: SessionStore, current: SessionState, target: SessionState
) -> None:
    session_id = store.create().id
    set_state(store.engine, session_id, current)
    before = store.get(session_id)
    after = store.transition(session_id, target)
    assert (after.state, after.version) == (target, before.version + 1)
    assert store.get(session_id) == after


def test_job_for_terminated_session_is_refused(store: SessionStore, gate: TurnGate) -> None:
    session_id = store.create().id
    assert store.close(session_id).state == SessionState.TERMINATED
    assert store.close(session_id).state == SessionState.TERMINATED  # closing twice is fine
    with pytest.raises(SessionTerminated), store.engine.begin() as conn:
        gate.assign_sequence(conn, session_id)
    with pytest.raises(SessionTerminated):
        store.activate(session_id)


def test_two_processes_racing_activate_against_sleep_lose_no_update(
    settings: Settings, store: SessionStore, redis_client: redis.Redis
) -> None:
    rounds = 50
    session_id = store.create().id
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(2)
    results = spawn.Queue()
    values = settings.model_dump()
    racers = [
        spawn.Process(target=body, args=(values, session_id, rounds, barrier, results))
        for body in (session_racers.activate_and_append, session_racers.put_to_sleep)
    ]
    for racer in racers:
        racer.start()
    try:
        reports = {
            name: (writes, error)
            for name, writes, error in (results.get(timeout=120) for _ in racers)
        }
    finally:
        for racer in racers:
            racer.join(timeout=30)
    assert all(error is None for _, error in reports.values()), reports
    # Then the session is in a live state, every write counted once, every turn kept in order
    record = store.get(session_id)
    assert record.state in (SessionState.ACTIVE, SessionState.SLEEP)
    assert record.version == sum(writes for writes, _ in reports.values())
    assert (record.turns, record.done_seq, record.next_seq) == (rounds, rounds, rounds)
    assert [entry["seq"] for entry in record.model_history] == list(range(rounds))
    held = store.redis_tier.read(session_id)
    context, _ = store.load_context(session_id, record.turns)
    expected = [m for n in range(rounds) for m in session_racers.turn_messages(n)]
    assert list(context.messages) == expected
    # And Redis follows the final state: no copy when asleep, the current one when active
    assert held == (None if record.state == SessionState.SLEEP else context)


def test_sleep_drops_redis_copy_and_activate_restores_it(
    store: SessionStore, gate: TurnGate
) -> None:
    session_id = store.create().id
    context = take_turn(store, gate, session_id, "one")
    assert store.redis_tier.read(session_id) == context
    store.transition(session_id, SessionState.SLEEP)
    assert store.redis_tier.read(session_id) is None
    record = store.activate(session_id)
    assert store.redis_tier.read(session_id) == context
    assert store.load_context(session_id, record.turns) == (context, ContextTier.REDIS)


# -- context tiers ----------------------------------------------------------------------------


@pytest.fixture
def own_redis_db(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=OWN_REDIS_DB)
    yield client
    keys = list(client.scan_iter(match=f"{settings.redis_prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_context_survives_redis_flushdb_restored_from_postgres(
    settings: Settings, db_engine: Engine, own_redis_db: redis.Redis
) -> None:
    # Given a session with three turns written through to Redis db 2 and PostgreSQL
    store = SessionStore.from_settings(settings, db_engine, own_redis_db)
    gate = TurnGate(store)
    session_id = store.create().id
    for text in ("one", "two", "three"):
        context = take_turn(store, gate, session_id, text)
    assert own_redis_db.exists(store.keys.session_context(session_id))
    # When Redis loses everything and a fresh worker picks the session up
    own_redis_db.flushdb()
    restarted = SessionStore.from_settings(settings, db_engine, own_redis_db)
    record = restarted.activate(session_id)
    # Then the context comes back whole from PostgreSQL, and Redis is refilled
    assert restarted.load_context(session_id, record.turns) == (context, ContextTier.POSTGRES)
    assert restarted.load_context(session_id, record.turns) == (context, ContextTier.REDIS)
    assert take_turn(restarted, TurnGate(restarted), session_id, "four").turns == 4


def test_stale_redis_copy_is_never_served(store: SessionStore, gate: TurnGate) -> None:
    session_id = store.create().id
    take_turn(store, gate, session_id, "one")
    two = take_turn(store, gate, session_id, "two")
    # A write-through that lost its race cannot put an older turn over a newer one
    assert not store.redis_tier.write(session_id, SessionContext(turns=1))
    # And a copy that missed a turn is detected by its turn count
    store.redis_tier.drop(session_id)
    store.redis_tier.write(session_id, SessionContext(turns=1))
    assert store.load_context(session_id, 2) == (two, ContextTier.POSTGRES)


def test_redis_tier_evicts_least_used_context_and_sets_ttl(
    redis_client: redis.Redis, settings: Settings
) -> None:
    keys = RedisKeys(settings.redis_prefix)
    tier = RedisContextTier(redis_client, keys, ttl_s=600, max_contexts=3)
    for session_id in ("s1", "s2", "s3"):
        tier.write(session_id, SessionContext(turns=1))
    for session_id in ("s1", "s1", "s3"):
        assert tier.read(session_id) is not None
    # When a fourth context arrives in a tier of three, the least used (s2) goes
    tier.write("s4", SessionContext(turns=1))
    held = {s for s in ("s1", "s2", "s3", "s4") if redis_client.exists(keys.session_context(s))}
    assert held == {"s1", "s3", "s4"}
    assert redis_client.zcard(keys.session_index()) == 3
    assert 0 < redis_client.ttl(keys.session_context("s4")) <= 600
    # And an entry whose key expired is pruned from the index
    redis_client.delete(keys.session_context("s3"))
    assert tier.prune_index() == 1


# -- ordering -------------------------------------------------------------------------------


def test_turns_claimed_in_wrong_order_apply_in_sequence_order(
    store: SessionStore, gate: TurnGate
) -> None:
    # Given two jobs of one session, numbered 0 and 1 at submit
    session_id = store.create().id
    with store.engine.begin() as conn:
        first, second = (
            gate.assign_sequence(conn, session_id),
            gate.assign_sequence(conn, session_id),
        )
    assert (first, second) == (0, 1)
    assert gate.wait_for_turn(session_id, second, wait_s=0) == TurnDecision.WAIT
    # When a worker claims the second job first, it waits on the gate
    waiting = threading.Event()
    outcome: queue.Queue[tuple[TurnDecision, SessionContext]] = queue.Queue()

    def run_second() -> None:
        waiting.set()
        decision = gate.wait_for_turn(session_id, second, wait_s=60)
        record = store.activate(session_id)
        context, _ = store.load_context(session_id, record.turns)
        outcome.put((decision, context))

    worker = threading.Thread(target=run_second)
    worker.start()
    assert waiting.wait(30)
    assert outcome.empty()
    # And the first job runs and commits its turn
    assert gate.wait_for_turn(session_id, first, wait_s=0) == TurnDecision.RUN
    record = store.activate(session_id)
    context, _ = store.load_context(session_id, record.turns)
    first_turn = context.with_turn([ChatMessage(role="user", content="first")])
    with store.engine.begin() as conn:
        assert store.append_turn(conn, session_id, first, first_turn, model="small")
    gate.notify_turn_done(session_id)
    # Then the second runs, seeing the first's turn
    worker.join(timeout=60)
    decision, seen = outcome.get(timeout=1)
    assert decision == TurnDecision.RUN
    assert seen == first_turn
    # And a redelivered first job cannot apply its turn again
    with store.engine.begin() as conn:
        assert not store.append_turn(conn, session_id, first, first_turn, model="small")
    assert gate.wait_for_turn(session_id, first, wait_s=0) == TurnDecision.ALREADY_DONE


def test_turn_built_on_stale_context_is_refused(store: SessionStore, gate: TurnGate) -> None:
    session_id = store.create().id
    with store.engine.begin() as conn:
        seq = gate.assign_sequence(conn, session_id)
    stale = SessionContext(turns=5).with_turn([ChatMessage(role="user", content="x")])
    with pytest.raises(SessionConflict), store.engine.begin() as conn:
        store.append_turn(conn, session_id, seq, stale, model="m")


def test_failed_predecessor_does_not_stall_the_session(store: SessionStore, gate: TurnGate) -> None:
    session_id = store.create().id
    with store.engine.begin() as conn:
        first, second = (
            gate.assign_sequence(conn, session_id),
            gate.assign_sequence(conn, session_id),
        )
        conn.execute(
            insert(jobs).values(
                id=str(uuid.uuid4()),
                task_type="generate",
                priority=5,
                status="failed",
                input="x",
                params={},
                timeout_s=10.0,
                session_id=session_id,
                session_seq=first,
            )
        )
    assert gate.wait_for_turn(session_id, second, wait_s=10) == TurnDecision.RUN
    assert store.get(session_id).done_seq == 1


def test_model_history_records_the_model_of_each_turn(store: SessionStore, gate: TurnGate) -> None:
    session_id = store.create().id
    for model in ("small", "large"):
        with store.engine.begin() as conn:
            seq = gate.assign_sequence(conn, session_id)
        record = store.activate(session_id)
        context, _ = store.load_context(session_id, record.turns)
        after = context.with_turn([ChatMessage(role="assistant", content=model)])
        with store.engine.begin() as conn:
            store.append_turn(conn, session_id, seq, after, model=model, job_id=f"j{seq}")
    history = store.get(session_id).model_history
    assert [(h["seq"], h["model"], h["job_id"]) for h in history] == [
        (0, "small", "j0"),
        (1, "large", "j1"),
    ]


# -- sweep ----------------------------------------------------------------------------------


def test_sweep_with_chosen_clock_sleeps_idle_and_terminates_expired(
    store: SessionStore, gate: TurnGate, redis_client: redis.Redis
) -> None:
    # The clock is chosen near the real time, so other tests' fresh sessions are not swept
    now = datetime.now(UTC)
    idle_sleep_after_s, terminate_after_s = 15 * 60.0, 24 * 3600.0
    given = {
        "recent": (SessionState.ACTIVE, timedelta(seconds=10)),
        "idle": (SessionState.ACTIVE, timedelta(minutes=20)),
        "asleep_long": (SessionState.SLEEP, timedelta(days=2)),
        "active_long": (SessionState.ACTIVE, timedelta(days=2)),
        "unused": (SessionState.INIT, timedelta(hours=1)),
    }
    ids: dict[str, str] = {}
    for name, (state, idle) in given.items():
        session_id = ids[name] = store.create().id
        if state != SessionState.INIT:
            take_turn(store, gate, session_id, name)
        set_state(store.engine, session_id, state, last_active_at=now - idle)
    assert store.redis_tier.read(ids["idle"]) is not None

    report = sweep_sessions(
        store.engine, redis_client, store.keys, now, idle_sleep_after_s, terminate_after_s
    )

    states = {name: store.get(session_id).state for name, session_id in ids.items()}
    assert states == {
        "recent": SessionState.ACTIVE,
        "idle": SessionState.SLEEP,
        "asleep_long": SessionState.TERMINATED,
        "active_long": SessionState.TERMINATED,
        "unused": SessionState.INIT,
    }
    assert report.slept >= 1 and report.terminated >= 2
    assert store.redis_tier.read(ids["idle"]) is None
    assert store.redis_tier.read(ids["recent"]) is not None
    # The idle session's context waits in PostgreSQL for its next job
    record = store.activate(ids["idle"])
    context, _ = store.load_context(ids["idle"], record.turns)
    assert [m.content for m in context.messages] == ["idle", "idle"]
