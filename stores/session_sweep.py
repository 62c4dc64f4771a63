"""The periodic sweep: idle ACTIVE sessions go to sleep, long-idle sessions end.

Run by Celery beat (one instance at a time). The decision per session is
``infermq.sessions.sweep_target``; this module finds the candidates and writes the decisions
with the same optimistic concurrency as every transition, so a session used between the read
and the write keeps its new version and is left alone until the next sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
from sqlalchemy import Engine, func, select, tuple_, update

from infermq.keys import RedisKeys
from infermq.sessions import SessionState, check_sweep_timeouts, sweep_target
from infermq.tables import sessions
from stores.redis_context import RedisContextTier

_LIVE_STATES = (SessionState.INIT.value, SessionState.ACTIVE.value, SessionState.SLEEP.value)


@dataclass(frozen=True)
class SweepReport:
    """What one sweep changed."""

    slept: int
    terminated: int
    pruned_index_entries: int  # Redis LFU entries whose context key had expired


def sweep_sessions(
    engine: Engine,
    redis_client: redis.Redis,
    keys: RedisKeys,
    now: datetime,
    idle_sleep_after_s: float,
    terminate_after_s: float,
    *,
    batch_size: int = 1000,
) -> SweepReport:
    """Terminates expired sessions, puts idle ACTIVE ones to sleep, prunes Redis's index.

    The clock is a parameter (the sweep never reads the time), so tests choose it. Sleeping
    and ended sessions lose their Redis copy; PostgreSQL keeps every context.

    Raises:
        ConfigError: ``terminate_after_s`` is not longer than ``idle_sleep_after_s``.
    """
    check_sweep_timeouts(idle_sleep_after_s, terminate_after_s)
    # Only the Redis tier's drop and prune are used: its size bounds do not matter here.
    tier = RedisContextTier(redis_client, keys, ttl_s=1, max_contexts=1)
    counts = {SessionState.TERMINATED: 0, SessionState.SLEEP: 0}
    # Termination first, so an expired ACTIVE session is not put to sleep on the way.
    for states, idle_s in (
        (_LIVE_STATES, terminate_after_s),
        ((SessionState.ACTIVE.value,), idle_sleep_after_s),
    ):
        cutoff = now - timedelta(seconds=idle_s)
        after: tuple[datetime, str] | None = None
        while True:
            query = (
                select(
                    sessions.c.id, sessions.c.state, sessions.c.version, sessions.c.last_active_at
                )
                .where(sessions.c.state.in_(states), sessions.c.last_active_at <= cutoff)
                .order_by(sessions.c.last_active_at, sessions.c.id)
                .limit(batch_size)
            )
            if after is not None:
                query = query.where(
                    tuple_(sessions.c.last_active_at, sessions.c.id) > tuple_(*after)
                )
            with engine.connect() as conn:
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
                counts[target] += _write_states(engine, tier, target, id_versions)
    return SweepReport(
        slept=counts[SessionState.SLEEP],
        terminated=counts[SessionState.TERMINATED],
        pruned_index_entries=tier.prune_index(),
    )


def _write_states(
    engine: Engine,
    tier: RedisContextTier,
    target: SessionState,
    id_versions: list[tuple[str, int]],
) -> int:
    """One optimistic write for many sessions; those changed meanwhile are skipped."""
    with engine.begin() as conn:
        written = (
            conn.execute(
                update(sessions)
                .where(tuple_(sessions.c.id, sessions.c.version).in_(id_versions))
                .values(state=target.value, version=sessions.c.version + 1, updated_at=func.now())
                .returning(sessions.c.id)
            )
            .scalars()
            .all()
        )
        # Inside the transaction, under the row locks, as SessionStore orders every state
        # change's Redis side effect.
        tier.drop(*written)
    return len(written)
