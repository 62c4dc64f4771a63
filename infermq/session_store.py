"""Sessions in PostgreSQL (the truth) with their contexts cached in Redis.

Concurrency: every state change is an optimistic write, ``UPDATE ... WHERE id AND version``;
the loser re-reads and either retries or gets ``InvalidTransition``, so no update is lost. The
hot tier's side effect of a state change (SLEEP drops the Redis copy, ACTIVE restores it) runs
inside that UPDATE's transaction, while PostgreSQL holds the row lock, so Redis follows the
states in the order PostgreSQL committed them.

Ordering: ``assign_sequence`` numbers a session's jobs at submit (``next_seq``); the job with
seq n runs when ``done_seq == n`` (``wait_for_turn``), and its turn is appended with
``done_seq := n + 1`` in the job's commit transaction, so jobs of one session run one at a time
in submission order whatever their priorities, and a redelivered job cannot apply its turn
twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import Connection, Engine, func, literal, select, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from infermq.errors import (
    InvalidTransition,
    SessionConflict,
    SessionNotFound,
    SessionTerminated,
)
from infermq.jobs import FINAL_STATUSES
from infermq.keys import RedisKeys
from infermq.redis_context import RedisContextTier
from infermq.sessions import (
    ContextTier,
    SessionContext,
    SessionState,
    TurnDecision,
    check_sweep_timeouts,
    check_transition,
    decode_context,
    encode_context,
    next_state,
    sweep_target,
    turn_decision,
)
from infermq.settings import Settings
from infermq.tables import jobs, sessions

log = logging.getLogger(__name__)

# A transition retries on a lost race; each loss means another writer succeeded, so this bound
# is reached only under a storm of writes to one session.
MAX_TRANSITION_ATTEMPTS = 50

_RECORD_COLUMNS = [c for c in sessions.c if c.name != "context_zlib"]


@dataclass(frozen=True)
class SessionRecord:
    """A session's row, without its context."""

    id: str
    tenant: str | None
    state: SessionState
    version: int
    model_history: list[dict[str, Any]]
    turns: int
    next_seq: int
    done_seq: int
    created_at: datetime
    last_active_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> SessionRecord:
        values = {c.name: row._mapping[c.name] for c in _RECORD_COLUMNS}
        values["state"] = SessionState(values["state"])
        return cls(**values)


@dataclass(frozen=True)
class SweepReport:
    slept: int
    terminated: int
    pruned_index_entries: int


class SessionStore:
    """Creates sessions, moves them between states, orders their jobs, stores their context."""

    def __init__(
        self,
        engine: Engine,
        redis_client: redis.Redis,
        keys: RedisKeys,
        *,
        context_ttl_s: int = 3600,
        max_redis_contexts: int = 100_000,
    ) -> None:
        self.engine = engine
        self.redis = redis_client
        self.keys = keys
        self.redis_tier = RedisContextTier(
            redis_client, keys, ttl_s=context_ttl_s, max_contexts=max_redis_contexts
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, engine: Engine, redis_client: redis.Redis
    ) -> SessionStore:
        """A store with the settings' key prefix and Redis tier bounds."""
        return cls(
            engine,
            redis_client,
            RedisKeys(settings.redis_prefix),
            context_ttl_s=settings.session_context_ttl_s,
            max_redis_contexts=settings.session_redis_max_contexts,
        )

    # -- lifecycle ------------------------------------------------------------------------

    def create(self, session_id: str | None = None, tenant: str | None = None) -> SessionRecord:
        """A new INIT session; creating an id that exists returns that session unchanged."""
        session_id = session_id or str(uuid.uuid4())
        with self.engine.begin() as conn:
            conn.execute(
                pg_insert(sessions)
                .values(id=session_id, tenant=tenant, state=SessionState.INIT.value)
                .on_conflict_do_nothing(index_elements=["id"])
            )
        return self.get(session_id)

    def get(self, session_id: str) -> SessionRecord:
        """The session's row.

        Raises:
            SessionNotFound: no session has this id.
        """
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*_RECORD_COLUMNS).where(sessions.c.id == session_id)
            ).first()
        if row is None:
            raise SessionNotFound(f"no session {session_id!r}: create it with client.session()")
        return SessionRecord.from_row(row)

    def list_sessions(
        self, state: SessionState | None = None, limit: int = 100
    ) -> list[SessionRecord]:
        """Sessions, most recently active first (for ``infermq session list``)."""
        query = select(*_RECORD_COLUMNS).order_by(sessions.c.last_active_at.desc()).limit(limit)
        if state is not None:
            query = query.where(sessions.c.state == state.value)
        with self.engine.connect() as conn:
            return [SessionRecord.from_row(r) for r in conn.execute(query)]

    def transition(self, session_id: str, target: SessionState) -> SessionRecord:
        """Moves the session along one allowed edge, safely under concurrent writers.

        Raises:
            InvalidTransition: ``state → target`` is not an allowed edge (re-checked after
                every lost race, so a loser sees the winner's state).
            SessionNotFound: no session has this id.
            SessionConflict: the session changed ``MAX_TRANSITION_ATTEMPTS`` times meanwhile.
        """
        for _ in range(MAX_TRANSITION_ATTEMPTS):
            record = self.get(session_id)
            check_transition(record.state, target)
            written = self._write_state(record, target)
            if written is not None:
                return written
        raise self._conflict(session_id, target)

    def activate(self, session_id: str) -> SessionRecord:
        """Makes sure the session is ACTIVE before one of its jobs runs, and marks it used.

        INIT or SLEEP becomes ACTIVE (the context is restored to Redis from PostgreSQL); an
        ACTIVE session only has its ``last_active_at`` renewed, so the sweep does not put it
        to sleep under a running job.

        Raises:
            SessionTerminated: the session ended; the job must be refused.
            SessionNotFound: no session has this id.
            SessionConflict: the session changed ``MAX_TRANSITION_ATTEMPTS`` times meanwhile.
        """
        for _ in range(MAX_TRANSITION_ATTEMPTS):
            record = self.get(session_id)
            if record.state == SessionState.TERMINATED:
                raise self._terminated(session_id)
            target = next_state(record.state, SessionState.ACTIVE) or SessionState.ACTIVE
            written = self._write_state(record, target)
            if written is not None:
                return written
        raise self._conflict(session_id, SessionState.ACTIVE)

    def close(self, session_id: str) -> SessionRecord:
        """Terminates the session on request; closing a TERMINATED session changes nothing.

        Raises:
            SessionNotFound: no session has this id.
        """
        try:
            return self.transition(session_id, SessionState.TERMINATED)
        except InvalidTransition:
            record = self.get(session_id)
            if record.state == SessionState.TERMINATED:
                return record
            raise

    def _write_state(self, record: SessionRecord, target: SessionState) -> SessionRecord | None:
        """The optimistic write of one state; ``None`` when another writer got there first."""
        values: dict[str, Any] = {
            "state": target.value,
            "version": sessions.c.version + 1,
            "updated_at": func.now(),
        }
        if target == SessionState.ACTIVE:
            values["last_active_at"] = func.now()
        with self.engine.begin() as conn:
            row = conn.execute(
                update(sessions)
                .where(sessions.c.id == record.id, sessions.c.version == record.version)
                .values(**values)
                .returning(*_RECORD_COLUMNS, sessions.c.context_zlib)
            ).first()
            if row is None:
                return None
            # Still inside the transaction: the row lock orders these side effects as the
            # states are ordered, so Redis never keeps the copy of a session that sleeps.
            if target in (SessionState.SLEEP, SessionState.TERMINATED):
                self.redis_tier.drop(record.id)
            elif record.state != SessionState.ACTIVE and row.context_zlib is not None:
                self.redis_tier.write_encoded(record.id, row.turns, row.context_zlib)
        return SessionRecord.from_row(row)

    # -- ordering ---------------------------------------------------------------------------

    def assign_sequence(self, conn: Connection, session_id: str) -> int:
        """The next sequence number of the session's jobs (0, 1, 2, ...), taken at submit.

        Call it in the transaction that inserts the job row (and store the number in
        ``jobs.session_seq``), so a number is never handed out without its job.

        Raises:
            SessionTerminated: the session ended; refuse the job.
            SessionNotFound: no session has this id.
        """
        row = conn.execute(
            update(sessions)
            .where(
                sessions.c.id == session_id,
                sessions.c.state != SessionState.TERMINATED.value,
            )
            .values(next_seq=sessions.c.next_seq + 1)
            .returning(sessions.c.next_seq)
        ).first()
        if row is None:
            exists = conn.execute(select(sessions.c.id).where(sessions.c.id == session_id))
            if exists.first() is None:
                raise SessionNotFound(f"no session {session_id!r}: create it first")
            raise self._terminated(session_id)
        return int(row.next_seq) - 1

    def wait_for_turn(
        self, session_id: str, seq: int, wait_s: float, *, poll_s: float = 1.0
    ) -> TurnDecision:
        """Blocks until the job with ``seq`` may run, for at most ``wait_s``.

        Waits on the session's Redis stream of finished turns (no polling loop), re-reading
        ``done_seq`` from PostgreSQL at least every ``poll_s`` in case a notification was
        lost (a Redis flush). A predecessor job that ended without a turn (failed, dead,
        cancelled) is skipped here, so it cannot stall the session. ``WAIT`` means the bound
        passed: release the task slot and requeue the job rather than hold it.

        Raises:
            SessionNotFound: no session has this id.
        """
        deadline = time.monotonic() + wait_s
        stream = self.keys.session_turns(session_id)
        while True:
            last_event_id = self._last_turn_event_id(stream)
            done_seq = self.get(session_id).done_seq
            decision = turn_decision(done_seq, seq)
            if decision == TurnDecision.WAIT and self._skip_ended_job(session_id, done_seq):
                continue
            remaining_s = deadline - time.monotonic()
            if decision != TurnDecision.WAIT or remaining_s <= 0:
                return decision
            block_ms = max(1, int(min(remaining_s, poll_s) * 1000))
            try:
                self.redis.xread({stream: last_event_id}, count=1, block=block_ms)
            except redis.RedisError as e:
                log.warning("waiting on %s failed (%s); polling PostgreSQL instead", stream, e)
                time.sleep(block_ms / 1000)

    def _last_turn_event_id(self, stream: str) -> bytes | str:
        try:
            last = self.redis.xrevrange(stream, count=1)
        except redis.RedisError:
            return "0-0"
        event_id = last[0][0] if last else None
        return event_id if event_id is not None else "0-0"

    def _skip_ended_job(self, session_id: str, seq: int) -> bool:
        with self.engine.begin() as conn:
            status = conn.execute(
                select(jobs.c.status).where(
                    jobs.c.session_id == session_id, jobs.c.session_seq == seq
                )
            ).scalar()
            skipped = status in FINAL_STATUSES and self.skip_turn(conn, session_id, seq)
        if skipped:
            self.publish_turn(session_id)
        return skipped

    def skip_turn(self, conn: Connection, session_id: str, seq: int) -> bool:
        """Lets the session's next job run after job ``seq`` ended without a turn.

        Call it in the transaction that marks the job failed, dead or cancelled, then
        ``publish_turn(session_id)`` after the commit. Returns False if ``seq`` is not the
        session's current turn (already skipped or applied).
        """
        result = conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.done_seq == seq)
            .values(done_seq=seq + 1, updated_at=func.now())
        )
        return result.rowcount == 1

    # -- context ----------------------------------------------------------------------------

    def load_context(self, session_id: str, turns: int) -> tuple[SessionContext, ContextTier]:
        """The session's context after ``turns`` turns, from Redis if current, else PostgreSQL.

        ``turns`` comes from the record ``activate`` returned. A PostgreSQL read refills Redis.

        Raises:
            SessionNotFound: no session has this id.
            SessionContextError: the PostgreSQL copy cannot be decoded.
        """
        cached = self.redis_tier.read(session_id)
        if cached is not None and cached.turns == turns:
            return cached, ContextTier.REDIS
        with self.engine.connect() as conn:
            row = conn.execute(
                select(sessions.c.context_zlib, sessions.c.turns).where(
                    sessions.c.id == session_id
                )
            ).first()
        if row is None:
            raise SessionNotFound(f"no session {session_id!r}")
        if row.context_zlib is None:
            return SessionContext(), ContextTier.POSTGRES
        self.redis_tier.write_encoded(session_id, row.turns, row.context_zlib)
        return decode_context(row.context_zlib), ContextTier.POSTGRES

    def append_turn(
        self,
        conn: Connection,
        session_id: str,
        seq: int,
        context: SessionContext,
        model: str,
        job_id: str | None = None,
    ) -> bool:
        """Writes the context after job ``seq``'s turn and lets job ``seq + 1`` run.

        Call it in the job's commit transaction (job row, turn and webhook outbox together),
        so a kill -9 either loses the whole job (it is redelivered) or none of its turn; then
        ``publish_turn(session_id, context)`` after the commit. ``context`` is the loaded
        context ``with_turn(...)``. Returns False when this turn was already applied (a
        redelivered job): write nothing more for it.

        Raises:
            SessionConflict: the job did not hold the turn, or its context was stale.
            SessionContextError: the context is not plain JSON.
        """
        entry = {"seq": seq, "turn": context.turns, "model": model, "job_id": job_id}
        row = conn.execute(
            update(sessions)
            .where(
                sessions.c.id == session_id,
                sessions.c.done_seq == seq,
                sessions.c.turns == context.turns - 1,
            )
            .values(
                context_zlib=encode_context(context),
                turns=context.turns,
                done_seq=seq + 1,
                model_history=sessions.c.model_history.op("||")(literal([entry], JSONB)),
                version=sessions.c.version + 1,
                last_active_at=func.now(),
                updated_at=func.now(),
            )
            .returning(sessions.c.id)
        ).first()
        if row is not None:
            return True
        current = conn.execute(
            select(sessions.c.done_seq, sessions.c.turns).where(sessions.c.id == session_id)
        ).first()
        if current is None:
            raise SessionNotFound(f"no session {session_id!r}")
        if current.done_seq > seq:
            return False
        raise SessionConflict(
            f"session {session_id}: job seq {seq} appended a turn built on {context.turns - 1} "
            f"turns, but the session is at done_seq {current.done_seq} with {current.turns} "
            "turns; wait_for_turn must return RUN and the context be loaded after it"
        )

    def publish_turn(self, session_id: str, context: SessionContext | None = None) -> None:
        """After a turn's commit: writes ``context`` through to Redis, wakes the next job.

        Best effort (Redis may be down): PostgreSQL already holds the turn, and a waiting job
        re-reads PostgreSQL at least every ``poll_s``.
        """
        if context is not None:
            self.redis_tier.write(session_id, context)
        stream = self.keys.session_turns(session_id)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xadd(stream, {"turn": b"done"}, maxlen=16, approximate=True)
            pipe.expire(stream, self.redis_tier.ttl_s)
            pipe.execute()
        except redis.RedisError as e:
            log.warning("notifying %s failed: %s", stream, e)

    # -- sweep ------------------------------------------------------------------------------

    def sweep(
        self,
        now: datetime,
        idle_sleep_after_s: float,
        terminate_after_s: float,
        *,
        batch_size: int = 1000,
    ) -> SweepReport:
        """Terminates expired sessions, puts idle ACTIVE ones to sleep, prunes Redis's index.

        The clock is a parameter: the sweep never reads the time itself. A session used
        between the read and the write keeps its new version and is left alone.

        Raises:
            ConfigError: ``terminate_after_s`` is not longer than ``idle_sleep_after_s``.
        """
        check_sweep_timeouts(idle_sleep_after_s, terminate_after_s)
        live = [SessionState.INIT.value, SessionState.ACTIVE.value, SessionState.SLEEP.value]
        terminate_cutoff = now - timedelta(seconds=terminate_after_s)
        sleep_cutoff = now - timedelta(seconds=idle_sleep_after_s)
        counts = {SessionState.TERMINATED: 0, SessionState.SLEEP: 0}
        for states, cutoff in (
            (live, terminate_cutoff),
            ([SessionState.ACTIVE.value], sleep_cutoff),
        ):
            after: tuple[datetime, str] | None = None
            while True:
                query = (
                    select(
                        sessions.c.id,
                        sessions.c.state,
                        sessions.c.version,
                        sessions.c.last_active_at,
                    )
                    .where(sessions.c.state.in_(states), sessions.c.last_active_at <= cutoff)
                    .order_by(sessions.c.last_active_at, sessions.c.id)
                    .limit(batch_size)
                )
                if after is not None:
                    query = query.where(
                        tuple_(sessions.c.last_active_at, sessions.c.id) > tuple_(*after)
                    )
                with self.engine.connect() as conn:
                    rows = conn.execute(query).all()
                if not rows:
                    break
                after = (rows[-1].last_active_at, rows[-1].id)
                by_target: dict[SessionState, list[tuple[str, int]]] = {}
                for row in rows:
                    target = sweep_target(
                        SessionState(row.state),
                        row.last_active_at,
                        now,
                        idle_sleep_after_s,
                        terminate_after_s,
                    )
                    if target is not None:
                        by_target.setdefault(target, []).append((row.id, row.version))
                for target, id_versions in by_target.items():
                    counts[target] += self._write_states(target, id_versions)
        return SweepReport(
            slept=counts[SessionState.SLEEP],
            terminated=counts[SessionState.TERMINATED],
            pruned_index_entries=self.redis_tier.prune_index(),
        )

    def _write_states(self, target: SessionState, id_versions: list[tuple[str, int]]) -> int:
        """One optimistic write for many sessions; those changed meanwhile are skipped."""
        with self.engine.begin() as conn:
            written = conn.execute(
                update(sessions)
                .where(tuple_(sessions.c.id, sessions.c.version).in_(id_versions))
                .values(state=target.value, version=sessions.c.version + 1, updated_at=func.now())
                .returning(sessions.c.id)
            ).scalars().all()
            # Inside the transaction for the same reason as in _write_state.
            self.redis_tier.drop(*written)
        return len(written)

    # -- errors -----------------------------------------------------------------------------

    @staticmethod
    def _terminated(session_id: str) -> SessionTerminated:
        return SessionTerminated(
            f"session {session_id} is TERMINATED and takes no more jobs: open a new session"
        )

    @staticmethod
    def _conflict(session_id: str, target: SessionState) -> SessionConflict:
        return SessionConflict(
            f"session {session_id} changed {MAX_TRANSITION_ATTEMPTS} times while moving it to "
            f"{target}; retry later"
        )


def sweep_sessions(
    engine: Engine,
    redis_client: redis.Redis,
    keys: RedisKeys,
    now: datetime,
    idle_sleep_after_s: float,
    terminate_after_s: float,
) -> SweepReport:
    """The periodic sweep (Celery beat): see ``SessionStore.sweep``."""
    store = SessionStore(engine, redis_client, keys)
    return store.sweep(now, idle_sleep_after_s, terminate_after_s)

