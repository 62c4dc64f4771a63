"""Service errors that pass, and how a delivery outlives them without counting again.

A job's counted deliveries that did not finish make it a crash suspect (workers/isolation.py),
because the job may be at fault: a worker killed in the middle of it, a poison input.
PostgreSQL restarting or Redis dropping its connections is nobody's fault. So a delivery that
meets one runs again in place, after a backoff, within ``transient_retry_for_s``, counting its
delivery once (``Delivery``); only past that limit is the message handed back to RabbitMQ, as
a retry whose delivery counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import OperationalError

from infermq.errors import ServiceUnavailable
from stores.connections import REDIS_OUTAGES

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (
    OperationalError, *REDIS_OUTAGES, ServiceUnavailable)
"""PostgreSQL or Redis unreachable, restarting, or dropping a connection."""

T = TypeVar("T")


@dataclass
class Delivery:
    """One delivery of a job message, across its in-place retries."""

    attempt_counted: bool = False
    solo_run_counted: bool = False


def backoff_s(failures: int, base_s: float = 0.1, cap_s: float = 5.0) -> float:
    """The pause after ``failures`` transient failures in a row: exponential, capped."""
    return float(min(cap_s, base_s * 2 ** (failures - 1)))


def run_through_blips(attempt: Callable[[], T], retry_for_s: float, what: str) -> T:
    """``attempt()``, again after each transient service error, until ``retry_for_s`` has
    passed.

    Raises:
        one of ``TRANSIENT_ERRORS``: the service stayed away for ``retry_for_s``.
    """
    deadline = time.monotonic() + retry_for_s
    failures = 0
    while True:
        try:
            return attempt()
        except TRANSIENT_ERRORS as e:
            failures += 1
            pause_s = backoff_s(failures)
            if time.monotonic() + pause_s > deadline:
                raise
            log.warning("%s: %s: %s; trying again in %.1f s (attempt not counted)",
                        what, type(e).__name__, e, pause_s)
            time.sleep(pause_s)
