"""Sessions in PostgreSQL (the truth) with their contexts cached in Redis.

Concurrency: every state change is an optimistic write, ``UPDATE ... WHERE id AND version``;
the loser re-reads and either retries or gets ``InvalidTransition``, so no update is lost. The
hot tier's side effect of a state change (SLEEP drops the Redis copy, ACTIVE restores it) runs
inside that UPDATE's transaction, while PostgreSQL holds the row lock, so Redis follows the
states in the order PostgreSQL committed them.

Ordering lives in ``stores.session_turns`` (the turn gate); ``append_turn`` here is its last
step: the context written with ``done_seq := seq + 1``, once per seq, so a redelivered job
cannot apply its turn twice. The sweep lives in ``stores.session_sweep``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import Connection, Engine, func, literal, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from infermq.errors import (
    InvalidTransition,
    SessionConflict,
    SessionNotFound,
    SessionTerminated,
)
from infermq.keys import RedisKeys
from infermq.sessions import (
    ContextTier,
    SessionContext,
    SessionState,
    TurnDecision,
    check_transition,
    decode_context,
    encode_context,
    next_state,
    turn_decision,
)
from infermq.settings import Settings
from infermq.tables import sessions
from stores.redis_context import RedisContextTier

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


class SessionStore:
    """Creates sessions, moves them between states, stores their context (PostgreSQL + Redis)."""

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
            row = conn.execute(select(*_RECORD_COLUMNS).where(sessions.c.id == session_id)).first()
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
                select(sessions.c.context_zlib, sessions.c.turns).where(sessions.c.id == session_id)
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
        """Writes the context after job ``seq``'s turn (PostgreSQL and Redis); job seq+1 may run.

        Call it in the job's commit transaction (job row, turn and webhook outbox together),
        so a kill -9 either loses the whole job (it is redelivered) or none of its turn; then
        ``TurnGate.notify_turn_done(session_id)`` after the commit. ``context`` is the loaded
        context ``.with_turn(...)``. The session becomes ACTIVE (a turn is use) unless it was
        terminated meanwhile. Returns False when this turn was already applied (a redelivered
        job): write nothing more for it.

        Raises:
            SessionConflict: the job did not hold the turn, or its context was stale.
            SessionContextError: the context is not plain JSON.
            SessionNotFound: no session has this id.
        """
        current = conn.execute(
            select(sessions.c.state, sessions.c.done_seq, sessions.c.turns)
            .where(sessions.c.id == session_id)
            .with_for_update()
        ).first()
        if current is None:
            raise SessionNotFound(f"no session {session_id!r}")
        decision = turn_decision(current.done_seq, seq)
        if decision == TurnDecision.ALREADY_DONE:
            return False
        if decision == TurnDecision.WAIT or current.turns != context.turns - 1:
            raise SessionConflict(
                f"session {session_id}: job seq {seq} appended a turn built on "
                f"{context.turns - 1} turns, but the session is at done_seq {current.done_seq} "
                f"with {current.turns} turns; wait_for_turn must return RUN and the context be "
                "loaded after it"
            )
        state = SessionState(current.state)
        if state != SessionState.TERMINATED:
            state = next_state(state, SessionState.ACTIVE) or SessionState.ACTIVE
        entry = {"seq": seq, "turn": context.turns, "model": model, "job_id": job_id}
        conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id)
            .values(
                state=state.value,
                context_zlib=encode_context(context),
                turns=context.turns,
                done_seq=seq + 1,
                model_history=sessions.c.model_history.op("||")(literal([entry], JSONB)),
                version=sessions.c.version + 1,
                last_active_at=func.now(),
                updated_at=func.now(),
            )
        )
        # Written through under the row lock, like a state change's side effect. Should the
        # commit fail, Redis holds a turn PostgreSQL lacks: readers compare turn counts, so
        # they fall back to PostgreSQL until the redelivered job overwrites it.
        if state == SessionState.ACTIVE:
            self.redis_tier.write(session_id, context)
        else:
            self.redis_tier.drop(session_id)
        return True

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
