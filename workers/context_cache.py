"""Tier 1 of session contexts: the worker's in-process LRU of active sessions.

A hit costs a dict lookup instead of a Redis round trip and a decompress. An entry is used
only when its turn count equals the session's (``SessionRecord.turns``), so a context that
another worker advanced is never served stale; idle entries are dropped after the time that
puts a session to sleep, because the sweep (another process) cannot reach this memory.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from infermq.sessions import ContextTier, SessionContext
from stores.session_store import SessionStore


@dataclass
class _Entry:
    context: SessionContext
    used_at_s: float


class ContextCache:
    """A thread-safe LRU of session contexts, bounded by count and by idle time."""

    def __init__(
        self,
        max_sessions: int,
        idle_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_sessions = max_sessions
        self.idle_ttl_s = idle_ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # Task threads of one worker share the cache.
        self._lock = threading.Lock()

    def get(self, session_id: str, turns: int) -> SessionContext | None:
        """The cached context if it is the one after ``turns`` turns and not idle too long."""
        now_s = self._clock()
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                return None
            if entry.context.turns != turns or now_s - entry.used_at_s >= self.idle_ttl_s:
                del self._entries[session_id]
                return None
            entry.used_at_s = now_s
            self._entries.move_to_end(session_id)
            return entry.context

    def put(self, session_id: str, context: SessionContext) -> None:
        """Caches ``context`` (the newest turn wins), evicting the least recently used."""
        now_s = self._clock()
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is not None and entry.context.turns > context.turns:
                return
            self._entries[session_id] = _Entry(context, now_s)
            self._entries.move_to_end(session_id)
            while len(self._entries) > self.max_sessions:
                self._entries.popitem(last=False)

    def drop(self, session_id: str) -> None:
        """Forgets a session (it went to sleep or ended)."""
        with self._lock:
            self._entries.pop(session_id, None)

    def drop_idle(self) -> int:
        """Forgets every entry idle for ``idle_ttl_s``; returns how many."""
        now_s = self._clock()
        with self._lock:
            idle = [s for s, e in self._entries.items() if now_s - e.used_at_s >= self.idle_ttl_s]
            for session_id in idle:
                del self._entries[session_id]
        return len(idle)

    def __len__(self) -> int:
        return len(self._entries)


def restore_context(
    cache: ContextCache, store: SessionStore, session_id: str, turns: int
) -> tuple[SessionContext, ContextTier]:
    """The session's context from the fastest tier that has it current: memory, Redis, PG.

    ``turns`` is ``SessionRecord.turns`` from ``store.activate``; the context is cached here.

    Raises:
        SessionNotFound: no session has this id.
        SessionContextError: the PostgreSQL copy cannot be decoded.
    """
    context = cache.get(session_id, turns)
    if context is not None:
        return context, ContextTier.MEMORY
    context, tier = store.load_context(session_id, turns)
    cache.put(session_id, context)
    return context, tier
