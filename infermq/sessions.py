"""The session lifecycle and the session's context, as pure code: no Redis, no PostgreSQL.

A session is a conversation (or a multi-step job) whose jobs share a context. Its state moves
only along the edges of ``ALLOWED_TRANSITIONS``; the sweep decides from a clock it is given;
the turn gate decides from sequence numbers. ``stores.session_store`` does the I/O.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from infermq.errors import ConfigError, InvalidTransition, SessionContextError
from infermq.jobs import ChatMessage

CONTEXT_FORMAT_VERSION: Final = 1
# Level 6 (zlib's default) compresses chat text within a few percent of level 9 at a third
# of the time; contexts are written on every turn.
CONTEXT_ZLIB_LEVEL: Final = 6


class SessionState(StrEnum):
    """Where a session is in its life; ``TERMINATED`` is final."""

    INIT = "INIT"
    ACTIVE = "ACTIVE"
    SLEEP = "SLEEP"
    TERMINATED = "TERMINATED"


# The one table of allowed edges: every state change in infermq is checked against it.
ALLOWED_TRANSITIONS: Final[Mapping[SessionState, frozenset[SessionState]]] = {
    SessionState.INIT: frozenset({SessionState.ACTIVE, SessionState.TERMINATED}),
    SessionState.ACTIVE: frozenset({SessionState.SLEEP, SessionState.TERMINATED}),
    SessionState.SLEEP: frozenset({SessionState.ACTIVE, SessionState.TERMINATED}),
    SessionState.TERMINATED: frozenset(),
}


def check_transition(current: SessionState, target: SessionState) -> None:
    """Refuses a state change that is not an edge of ``ALLOWED_TRANSITIONS``.

    Raises:
        InvalidTransition: ``current → target`` is not an allowed edge (a self-loop is not).
    """
    if target not in ALLOWED_TRANSITIONS[current]:
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[current])) or "none (it is final)"
        raise InvalidTransition(
            f"a session cannot go from {current} to {target}; from {current} it may go to: "
            f"{allowed}"
        )


def next_state(current: SessionState, wanted: SessionState) -> SessionState | None:
    """What a caller that wants the session in ``wanted`` must write: ``None`` if it is there.

    This is the idempotent form used by "make sure the session is ACTIVE" (every job does it):
    already being in the wanted state is not an error, any other non-edge is.

    Raises:
        InvalidTransition: the session is elsewhere and ``current → wanted`` is not an edge.
    """
    if current == wanted:
        return None
    check_transition(current, wanted)
    return wanted


def sweep_target(
    state: SessionState,
    last_active_at: datetime,
    now: datetime,
    idle_sleep_after_s: float,
    terminate_after_s: float,
) -> SessionState | None:
    """The state the sweep should move a session to, or ``None`` to leave it alone.

    A session idle for ``terminate_after_s`` ends, whatever its live state; an ACTIVE one idle
    for ``idle_sleep_after_s`` sleeps. INIT has no edge to SLEEP (it holds no context yet), so
    an unused INIT session waits for termination.

    Raises:
        ConfigError: ``terminate_after_s`` is not longer than ``idle_sleep_after_s``.
    """
    check_sweep_timeouts(idle_sleep_after_s, terminate_after_s)
    if state == SessionState.TERMINATED:
        return None
    idle = now - last_active_at
    if idle >= timedelta(seconds=terminate_after_s):
        return SessionState.TERMINATED
    if state == SessionState.ACTIVE and idle >= timedelta(seconds=idle_sleep_after_s):
        return SessionState.SLEEP
    return None


def check_sweep_timeouts(idle_sleep_after_s: float, terminate_after_s: float) -> None:
    """Raises ConfigError unless 0 < idle_sleep_after_s < terminate_after_s."""
    if not 0 < idle_sleep_after_s < terminate_after_s:
        raise ConfigError(
            f"session timeouts must satisfy 0 < idle_sleep_after_s ({idle_sleep_after_s}) < "
            f"terminate_after_s ({terminate_after_s}): a session sleeps before it ends"
        )


class ContextTier(StrEnum):
    """Where a restored context came from, fastest first."""

    MEMORY = "memory"  # the worker's in-process LRU
    REDIS = "redis"
    POSTGRES = "postgres"


class TurnDecision(StrEnum):
    """What the turn gate says to a worker holding the job with sequence number ``seq``."""

    RUN = "run"  # every earlier job of the session is done: run now
    WAIT = "wait"  # an earlier job is not done yet
    ALREADY_DONE = "already_done"  # this seq's turn was committed (a redelivered job)


def turn_decision(done_seq: int, seq: int) -> TurnDecision:
    """The turn gate: the job with ``seq`` runs only when ``done_seq == seq``.

    ``done_seq`` counts the jobs of the session that are finished (done, failed or skipped);
    jobs are numbered from 0 in submission order, so ``done_seq`` is also the next seq to run.
    """
    if seq == done_seq:
        return TurnDecision.RUN
    if seq > done_seq:
        return TurnDecision.WAIT
    return TurnDecision.ALREADY_DONE


class SessionContext(BaseModel):
    """What a session carries from one job to the next: the chat so far plus engine state.

    ``turns`` is the number of turns applied; every tier stores it with the context, so a
    reader can tell a stale copy (a tier missed a write) from the current one. JSON only:
    ``engine_state`` refuses anything that is not a JSON value (never pickled).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = CONTEXT_FORMAT_VERSION
    turns: int = Field(default=0, ge=0)
    messages: tuple[ChatMessage, ...] = ()
    engine_state: dict[str, JsonValue] | None = None

    def with_turn(
        self, messages: Iterable[ChatMessage], engine_state: dict[str, JsonValue] | None = None
    ) -> SessionContext:
        """The context after one more turn: its messages appended, engine state replaced."""
        return SessionContext(
            turns=self.turns + 1,
            messages=self.messages + tuple(messages),
            engine_state=engine_state,
        )


def encode_context(context: SessionContext) -> bytes:
    """The context as zlib-compressed JSON, the one format of the Redis and PostgreSQL tiers."""
    return zlib.compress(context.model_dump_json().encode(), CONTEXT_ZLIB_LEVEL)


def decode_context(blob: bytes) -> SessionContext:
    """The context stored by ``encode_context``.

    Raises:
        SessionContextError: the bytes are not a context of a known format version.
    """
    try:
        return SessionContext.model_validate_json(zlib.decompress(blob))
    except (zlib.error, ValidationError) as e:
        raise SessionContextError(
            f"a stored session context cannot be decoded ({e}); the PostgreSQL copy is the "
            "reference: drop the Redis key to fall back to it"
        ) from e
