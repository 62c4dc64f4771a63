"""Process bodies for the session race test: spawned processes import them from here."""

from __future__ import annotations

import traceback
from typing import Any

import redis

from infermq.errors import InvalidTransition
from infermq.jobs import ChatMessage
from infermq.keys import RedisKeys
from infermq.sessions import SessionState, TurnDecision
from infermq.settings import Settings
from stores.database import get_engine
from stores.session_store import SessionStore
from stores.session_turns import TurnGate

BARRIER_TIMEOUT_S = 60.0


def _store(settings_values: dict[str, Any]) -> SessionStore:
    settings = Settings(**settings_values)
    client = redis.Redis.from_url(settings.redis_url)
    return SessionStore(get_engine(settings), client, RedisKeys(settings.redis_prefix))


def turn_messages(round_no: int) -> list[ChatMessage]:
    return [
        ChatMessage(role="user", content=f"question {round_no}"),
        ChatMessage(role="assistant", content=f"answer {round_no}"),
    ]


def activate_and_append(
    settings_values: dict[str, Any], session_id: str, rounds: int, barrier: Any, results: Any
) -> None:
    """Each round: take a seq, wait for the turn, activate, load the context, append a turn.

    Reports how many writes bumped the session's version (one per activate and per append).
    """
    try:
        store = _store(settings_values)
        gate = TurnGate(store)
        writes = 0
        for round_no in range(rounds):
            barrier.wait(BARRIER_TIMEOUT_S)
            with store.engine.begin() as conn:
                seq = gate.assign_sequence(conn, session_id)
            if gate.wait_for_turn(session_id, seq, wait_s=30) != TurnDecision.RUN:
                raise AssertionError(f"seq {seq} did not get its turn")
            record = store.activate(session_id)
            writes += 1
            context, _tier = store.load_context(session_id, record.turns)
            with store.engine.begin() as conn:
                applied = store.append_turn(
                    conn, session_id, seq, context.with_turn(turn_messages(round_no)), "m"
                )
            writes += int(applied)
            gate.notify_turn_done(session_id)
        results.put(("activate_and_append", writes, None))
    except BaseException:
        results.put(("activate_and_append", -1, traceback.format_exc()))


def put_to_sleep(
    settings_values: dict[str, Any], session_id: str, rounds: int, barrier: Any, results: Any
) -> None:
    """Each round: try ACTIVE → SLEEP; a loser's InvalidTransition is expected and counted."""
    try:
        store = _store(settings_values)
        writes = 0
        for _ in range(rounds):
            barrier.wait(BARRIER_TIMEOUT_S)
            try:
                store.transition(session_id, SessionState.SLEEP)
                writes += 1
            except InvalidTransition:
                pass
        results.put(("put_to_sleep", writes, None))
    except BaseException:
        results.put(("put_to_sleep", -1, traceback.format_exc()))
