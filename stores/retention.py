"""Retention of job rows: Redis keys expire by TTL; PostgreSQL rows are pruned by age."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import delete

from infermq.jobs import FINAL_STATUSES, utcnow
from infermq.settings import Settings
from infermq.tables import jobs
from stores.database import get_engine

_AGE = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``45s`` as a timedelta.

    Raises:
        ValueError: the text is not a number followed by s, m, h or d.
    """
    match = _AGE.match(text.strip())
    if match is None:
        raise ValueError(f"age {text!r} is not like 7d, 12h, 30m or 45s")
    return timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])


def prune_jobs(settings: Settings, older_than: timedelta) -> int:
    """Deletes final job rows (and their transitions) created before now - ``older_than``."""
    cutoff = utcnow() - older_than
    with get_engine(settings).begin() as connection:
        deleted = connection.execute(
            delete(jobs)
            .where(jobs.c.created_at < cutoff)
            .where(jobs.c.status.in_([s.value for s in FINAL_STATUSES]))
        )
    return int(deleted.rowcount or 0)
