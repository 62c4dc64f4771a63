"""A job's steps inside its session: wait for its turn, restore the context, record the turn.

The session's jobs run in submission order: each job carries the sequence number it was given
at submit, and runs only when the session's ``done_seq`` reaches it (``TurnGate``). The context
comes from the fastest tier that has it current (worker memory, Redis, PostgreSQL) and the new
turn is written in the job's own commit transaction, so a kill -9 loses neither.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine

from infermq.errors import TurnNotReady
from infermq.jobs import ChatMessage, JobInput, JobMessage, TaskType
from infermq.sessions import SessionContext, TurnDecision
from infermq.settings import Settings
from stores.connections import get_binary_redis
from stores.session_store import SessionStore
from stores.session_turns import TurnGate
from workers.context_cache import ContextCache, restore_context


@dataclass(frozen=True)
class Turn:
    """A session job's place: its session, its sequence number and the context it starts from."""

    session_id: str
    seq: int
    context: SessionContext


class SessionSteps:
    """The session side of the job runner, one per worker process."""

    def __init__(self, settings: Settings, database: Engine) -> None:
        self.settings = settings
        self.store = SessionStore.from_settings(settings, database, get_binary_redis(settings))
        self.gate = TurnGate(self.store)
        self.contexts = ContextCache(
            settings.worker_context_cache_size, idle_ttl_s=settings.session_idle_sleep_after_s
        )

    def wait_for_turn(self, message: JobMessage) -> TurnDecision:
        """RUN, ALREADY_DONE (a redelivery) or raises TurnNotReady after the wait bound."""
        assert message.session_id is not None and message.session_seq is not None
        decision = self.gate.wait_for_turn(
            message.session_id, message.session_seq, self.settings.session_turn_wait_s
        )
        if decision == TurnDecision.WAIT:
            raise TurnNotReady(
                f"job {message.job_id} waits for turn {message.session_seq} of session "
                f"{message.session_id}"
            )
        return decision

    def begin(self, message: JobMessage) -> Turn:
        """Activates the session and restores its context.

        Raises:
            SessionTerminated: the session ended; the job fails.
        """
        assert message.session_id is not None and message.session_seq is not None
        record = self.store.activate(message.session_id)
        context, _tier = restore_context(
            self.contexts, self.store, message.session_id, record.turns
        )
        return Turn(message.session_id, message.session_seq, context)

    @staticmethod
    def engine_input(message: JobMessage, turn: Turn) -> JobInput:
        """Generation sees the chat so far followed by this job's input; other tasks see only
        their own input."""
        if message.task_type != TaskType.GENERATE:
            return message.input
        return [*turn.context.messages, *_as_chat(message.input)]

    @staticmethod
    def next_context(message: JobMessage, turn: Turn, output: object) -> SessionContext:
        messages = _as_chat(message.input)
        if message.task_type == TaskType.GENERATE and isinstance(output, str):
            messages.append(ChatMessage(role="assistant", content=output))
        return turn.context.with_turn(messages)

    def record_turn(
        self, connection: Connection, message: JobMessage, turn: Turn, context: SessionContext
    ) -> None:
        """Writes the turn in the job's commit transaction."""
        self.store.append_turn(
            connection, turn.session_id, turn.seq, context, message.model, message.job_id
        )

    def skip_turn(self, connection: Connection, message: JobMessage) -> None:
        """Lets the next job run after this one ended without a turn (failed, dead, cancelled)."""
        if message.session_id is not None and message.session_seq is not None:
            self.gate.skip_turn(connection, message.session_id, message.session_seq)

    def after_commit(self, session_id: str, context: SessionContext | None) -> None:
        if context is not None:
            self.contexts.put(session_id, context)
        self.gate.notify_turn_done(session_id)


def _as_chat(job_input: JobInput) -> list[ChatMessage]:
    if isinstance(job_input, str):
        return [ChatMessage(role="user", content=job_input)]
    return [m if isinstance(m, ChatMessage) else ChatMessage(role="user", content=m)
            for m in job_input]
