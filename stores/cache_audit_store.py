"""Where the live cache audit keeps its counts and the semantic tier's switch: PostgreSQL,
shared by every worker of a namespace (the fleet), so one worker's evidence turns the tier off
for all of them and ``infermq cache enable`` turns it back on for all of them.

A worker reads the switches once per ``switch_recheck_s`` (``INFERMQ_CACHE_SWITCH_RECHECK_S``),
not once per look-up: a change reaches every worker within that bound, and its own changes at
once."""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert

from infermq.audit_policy import AuditCounts
from infermq.errors import ServiceUnavailable
from infermq.tables import cache_audit_counts, cache_tier_switches

log = logging.getLogger(__name__)

AuditOutcome = Literal["agreed", "disagreed", "starved", "failed"]


class CacheAuditStore:
    """Audit counts and tier switches of one namespace."""

    def __init__(self, database: Engine, namespace: str, switch_recheck_s: float = 0.0) -> None:
        self.database, self.namespace = database, namespace
        self.switch_recheck_s = switch_recheck_s
        self._switches_lock = threading.Lock()
        self._off: frozenset[str] = frozenset()
        self._off_read_monotonic: float | None = None  # None: read at the next look-up

    def record(self, task_type: str, model: str, outcome: AuditOutcome) -> AuditCounts:
        """Adds one audit outcome and returns the counts after it, in one statement.

        Raises:
            ServiceUnavailable: PostgreSQL failed.
        """
        column = cache_audit_counts.c[outcome]
        insert = pg_insert(cache_audit_counts).values(
            namespace=self.namespace, task_type=task_type, model=model, **{outcome: 1})
        statement = insert.on_conflict_do_update(
            index_elements=["namespace", "task_type", "model"],
            set_={outcome: column + 1, "updated_at": sa.func.now()},
        ).returning(cache_audit_counts.c.agreed, cache_audit_counts.c.disagreed,
                    cache_audit_counts.c.starved, cache_audit_counts.c.failed)
        try:
            with self.database.begin() as connection:
                row = connection.execute(statement).one()
        except sa.exc.SQLAlchemyError as e:
            raise ServiceUnavailable(f"PostgreSQL failed recording a cache audit: {e}") from e
        return AuditCounts(*row)

    def counts(self) -> dict[tuple[str, str], AuditCounts]:
        """(task type, model) -> counts, for ``infermq cache stats`` and the metrics."""
        table = cache_audit_counts
        query = sa.select(table.c.task_type, table.c.model, table.c.agreed, table.c.disagreed,
                          table.c.starved, table.c.failed).where(
            table.c.namespace == self.namespace)
        with self.database.connect() as connection:
            return {(r[0], r[1]): AuditCounts(*r[2:]) for r in connection.execute(query)}

    def set_semantic(self, task_type: str, enabled: bool, reason: str) -> None:
        """Turns ``task_type``'s semantic tier on or off for every worker of the namespace."""
        statement = pg_insert(cache_tier_switches).values(
            namespace=self.namespace, task_type=task_type, semantic_enabled=enabled,
            reason=reason)
        statement = statement.on_conflict_do_update(
            index_elements=["namespace", "task_type"],
            set_={"semantic_enabled": enabled, "reason": reason, "changed_at": sa.func.now()})
        with self.database.begin() as connection:
            connection.execute(statement)
        self.recheck_switches()
        log.warning("semantic cache tier for %s turned %s: %s", task_type,
                    "on" if enabled else "off", reason)

    def disabled(self) -> dict[str, str]:
        """Task types whose semantic tier is off, with why."""
        table = cache_tier_switches
        query = sa.select(table.c.task_type, table.c.reason).where(
            table.c.namespace == self.namespace, table.c.semantic_enabled.is_(False))
        with self.database.connect() as connection:
            return {r[0]: r[1] for r in connection.execute(query)}

    def semantic_enabled(self, task_type: str) -> bool:
        """Whether ``task_type``'s semantic tier may serve (on unless switched off), as read at
        most ``switch_recheck_s`` ago.

        Raises:
            ServiceUnavailable: PostgreSQL failed.
        """
        with self._switches_lock:
            read_at = self._off_read_monotonic
            if read_at is None or time.monotonic() - read_at >= self.switch_recheck_s:
                try:
                    self._off = frozenset(self.disabled())
                except sa.exc.SQLAlchemyError as e:
                    raise ServiceUnavailable(
                        f"PostgreSQL failed reading the cache switch: {e}") from e
                self._off_read_monotonic = time.monotonic()
            return task_type not in self._off

    def recheck_switches(self) -> None:
        """Makes the next look-up read the switches from PostgreSQL again."""
        with self._switches_lock:
            self._off_read_monotonic = None
