"""Celery's task message protocol 2, in JSON: how infermq puts a job on RabbitMQ.

Shared by the producer (pika, ``producer/publisher.py``) and the worker's router, which
republishes a routed job to its model's queue (kombu): both must write exactly the message the
Celery worker consumes, and workers may not import the producer.
"""

from __future__ import annotations

import json
from typing import Any


def celery_task_message(task: str, task_id: str, kwargs: dict[str, Any]) -> tuple[bytes, dict]:
    """Body and headers of a Celery protocol 2 message that calls ``task(**kwargs)``."""
    body = json.dumps(
        [[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}],
        separators=(",", ":"),
        default=str,
    ).encode()
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": "()",
        "kwargsrepr": f"{{job {task_id}}}",
        "origin": "infermq-producer",
        "ignore_result": True,
    }
    return body, headers
