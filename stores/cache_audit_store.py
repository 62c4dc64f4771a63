"""Where the live cache audit keeps its counts and the semantic tier's switch: PostgreSQL,
shared by every worker of a namespace (the fleet), so one worker's evidence turns the tier off
for all of them and ``infermq cache enable`` turns it back on for all of them."""

from __future__ import annotations

import logging
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

    def __init__(self, database: Engine, namespace: str) -> None:
        self.database, self.namespace = database, namespace

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
        """Whether ``task_type``'s semantic tier may serve (on unless switched off).

        Raises:
            ServiceUnavailable: PostgreSQL failed.
        """
        table = cache_tier_switches
        query = sa.select(table.c.semantic_enabled).where(
            table.c.namespace == self.namespace, table.c.task_type == task_type)
        try:
            with self.database.connect() as connection:
                value = connection.execute(query).scalar_one_or_none()
        except sa.exc.SQLAlchemyError as e:
            raise ServiceUnavailable(f"PostgreSQL failed reading the cache switch: {e}") from e
        return value is None or bool(value)
