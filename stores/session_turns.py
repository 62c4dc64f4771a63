"""The turn gate: a session's jobs run one at a time, in submission order, whatever priority.

At submit, ``assign_sequence`` numbers the session's jobs (``sessions.next_seq``, incremented
in the transaction that inserts the job row). In the worker, the job with seq n runs only when
``sessions.done_seq == n``; its turn is appended with ``done_seq := n + 1``
(``SessionStore.append_turn``), or skipped if the job ends without one (``skip_turn``). A
worker that holds job n+1 first waits on the session's Redis stream of finished turns, for a
bounded time, then gives its task slot back (requeue), so an out-of-order prefetch cannot pin
a slot or deadlock a worker whose slots all hold later jobs.
"""

from __future__ import annotations

import logging
import time

import redis
from sqlalchemy import Connection, func, select, update

from infermq.errors import SessionNotFound, SessionTerminated
from infermq.jobs import FINAL_STATUSES
from infermq.sessions import SessionState, TurnDecision, turn_decision
from infermq.tables import jobs, sessions
from stores.session_store import SessionStore

log = logging.getLogger(__name__)


class TurnGate:
    """Orders the jobs of each session; built on the sessions' PostgreSQL rows and Redis."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

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
            raise SessionTerminated(
                f"session {session_id} is TERMINATED and takes no more jobs: open a new session"
            )
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
        stream = self.store.keys.session_turns(session_id)
        while True:
            # The stream position is read before done_seq, so a turn finished in between
            # is still seen by the XREAD below.
            last_event_id = self._last_turn_event_id(stream)
            done_seq = self.store.get(session_id).done_seq
            decision = turn_decision(done_seq, seq)
            if decision == TurnDecision.WAIT and self._skip_ended_job(session_id, done_seq):
                continue
            remaining_s = deadline - time.monotonic()
            if decision != TurnDecision.WAIT or remaining_s <= 0:
                return decision
            block_ms = max(1, int(min(remaining_s, poll_s) * 1000))
            try:
                self.store.redis.xread({stream: last_event_id}, count=1, block=block_ms)
            except redis.RedisError as e:
                log.warning("waiting on %s failed (%s); polling PostgreSQL instead", stream, e)
                time.sleep(block_ms / 1000)

    def skip_turn(self, conn: Connection, session_id: str, seq: int) -> bool:
        """Lets the session's next job run after job ``seq`` ended without a turn.

        Call it in the transaction that marks the job failed, dead or cancelled, then
        ``notify_turn_done(session_id)`` after the commit. Returns False if ``seq`` is not the
        session's current turn (already skipped or applied).
        """
        result = conn.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.done_seq == seq)
            .values(done_seq=seq + 1, updated_at=func.now())
        )
        return result.rowcount == 1

    def notify_turn_done(self, session_id: str) -> None:
        """After a turn's commit (appended or skipped): wakes the job waiting for the next one.

        Best effort (Redis may be down): a waiting job re-reads PostgreSQL every ``poll_s``.
        """
        stream = self.store.keys.session_turns(session_id)
        try:
            pipe = self.store.redis.pipeline(transaction=False)
            pipe.xadd(stream, {"turn": b"done"}, maxlen=16, approximate=True)
            pipe.expire(stream, self.store.redis_tier.ttl_s)
            pipe.execute()
        except redis.RedisError as e:
            log.warning("notifying %s failed: %s", stream, e)

    def _last_turn_event_id(self, stream: str) -> bytes | str:
        try:
            last = self.store.redis.xrevrange(stream, count=1)
        except redis.RedisError:
            return "0-0"
        event_id = last[0][0] if last else None
        return event_id if event_id is not None else "0-0"

    def _skip_ended_job(self, session_id: str, seq: int) -> bool:
        """Skips job ``seq`` if its row is final: it will never append a turn."""
        with self.store.engine.begin() as conn:
            status = conn.execute(
                select(jobs.c.status).where(
                    jobs.c.session_id == session_id, jobs.c.session_seq == seq
                )
            ).scalar()
            skipped = status in FINAL_STATUSES and self.skip_turn(conn, session_id, seq)
        if skipped:
            self.notify_turn_done(session_id)
        return skipped
