"""The worker's in-process tier of session contexts (an LRU), and restoring through the tiers."""

from __future__ import annotations

import redis
from sqlalchemy import Engine

from infermq.jobs import ChatMessage
from infermq.sessions import ContextTier, SessionContext, SessionState
from infermq.settings import Settings
from stores.session_store import SessionStore
from workers.context_cache import ContextCache, restore_context


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def context(turns: int) -> SessionContext:
    return SessionContext(turns=turns, messages=(ChatMessage(role="user", content=str(turns)),))


def test_least_recently_used_session_is_evicted_first() -> None:
    cache = ContextCache(max_sessions=2, idle_ttl_s=60)
    cache.put("a", context(1))
    cache.put("b", context(1))
    assert cache.get("a", 1) is not None  # "a" is now the most recent
    cache.put("c", context(1))
    assert (cache.get("a", 1), cache.get("b", 1), cache.get("c", 1)) == (
        context(1),
        None,
        context(1),
    )


def test_entry_of_another_turn_is_a_miss_and_older_never_replaces_newer() -> None:
    cache = ContextCache(max_sessions=4, idle_ttl_s=60)
    cache.put("a", context(2))
    cache.put("a", context(1))
    assert cache.get("a", 2) == context(2)
    assert cache.get("a", 3) is None  # another worker applied turn 3
    assert len(cache) == 0


def test_idle_entries_are_dropped_like_a_sleeping_session() -> None:
    clock = FakeClock()
    cache = ContextCache(max_sessions=4, idle_ttl_s=60, clock=clock)
    cache.put("a", context(1))
    cache.put("b", context(1))
    clock.now_s = 30
    assert cache.get("a", 1) is not None
    clock.now_s = 70
    assert cache.drop_idle() == 1  # "b", idle since 0
    assert cache.get("a", 1) is not None
    clock.now_s = 200
    assert cache.get("a", 1) is None


def test_restore_reads_memory_then_redis_then_postgres(
    settings: Settings, db_engine: Engine, redis_client: redis.Redis
) -> None:
    store = SessionStore.from_settings(settings, db_engine, redis_client)
    session_id = store.create().id
    record = store.activate(session_id)
    with db_engine.begin() as conn:
        store.append_turn(conn, session_id, 0, context(0).with_turn([]), model="m")
    written = context(0).with_turn([])
    cache = ContextCache(max_sessions=4, idle_ttl_s=60)
    record = store.get(session_id)
    assert restore_context(cache, store, session_id, record.turns) == (written, ContextTier.REDIS)
    assert restore_context(cache, store, session_id, record.turns) == (written, ContextTier.MEMORY)
    store.transition(session_id, SessionState.SLEEP)
    cache.drop(session_id)
    assert restore_context(cache, store, session_id, record.turns) == (
        written,
        ContextTier.POSTGRES,
    )
