"""Canary slices: a share of the jobs routed to a model goes to its canary instead.

The split is by a hash of the job id, not a random draw, so that a job redelivered to the router
takes the same arm again and a test with fixed ids is deterministic. SHA-256 rather than
``hash()``: Python's string hash is salted per process, and every router process must agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from infermq.registry import Registry

Arm = Literal["primary", "canary"]


@dataclass(frozen=True)
class CanaryChoice:
    """Which model a job runs on after the canary split, and which arm that is."""

    model: str
    arm: Arm
    bucket: float


def job_bucket(job_id: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by ``job_id`` (and ``salt``, the primary model's name).

    Salting by the primary keeps the slices of different primaries independent.
    """
    digest = hashlib.sha256(f"{salt}\x00{job_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_canary(job_id: str, primary: str, registry: Registry) -> CanaryChoice:
    """The primary model, or one of its canaries when the job's bucket falls in its share.

    Canaries of one primary take consecutive slices of [0, 1) in registry order, so shares of
    10 % and 5 % send buckets [0, 0.10) to the first and [0.10, 0.15) to the second.
    """
    bucket = job_bucket(job_id, primary)
    upper = 0.0
    for canary in registry.canaries_of(primary):
        upper += canary.traffic_share
        if bucket < upper:
            return CanaryChoice(model=canary.name, arm="canary", bucket=bucket)
    return CanaryChoice(model=primary, arm="primary", bucket=bucket)
