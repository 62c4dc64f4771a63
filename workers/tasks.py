"""The Celery tasks of a worker: thin shells around the job runner.

A task's outcome decides the message's fate: returning acks it; ``Reject(requeue=False)``
sends it to the dead-letter queue; ``Reject(requeue=True)`` gives it back to its queue
untouched (its model is not READY here); a retry republishes it with backoff for transient
failures (PostgreSQL or Redis briefly unreachable).
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject
from sqlalchemy.exc import OperationalError

from infermq.errors import DeadLetter, ModelNotReady, ServiceUnavailable, TurnNotReady
from infermq.keys import RUN_JOB_TASK
from workers.maintenance import register_maintenance_tasks
from workers.runtime import WorkerRuntime

TRANSIENT_ERRORS = (OperationalError, redis.ConnectionError, redis.TimeoutError,
                    ServiceUnavailable)
MAX_TRANSIENT_RETRIES = 5


def register_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    """Registers the job and maintenance tasks on ``app``, bound to ``runtime`` (the webhook
    task is registered before the runtime is built: its hook goes to the runner,
    ``register_webhook_task``)."""
    register_maintenance_tasks(app, runtime.settings)

    @app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, ignore_result=True)
    def run_job(self: Task, message: dict[str, Any]) -> None:
        try:
            runtime.runner.run(message)
        except DeadLetter as e:
            raise Reject(str(e), requeue=False) from e
        except ModelNotReady as e:
            raise Reject(str(e), requeue=True) from e
        except TurnNotReady as e:
            # An earlier job of the same session still runs: give the slot back, come back.
            raise self.retry(exc=e, countdown=1, max_retries=None) from e
        except TRANSIENT_ERRORS as e:
            countdown_s = min(30, 2 ** self.request.retries)
            raise self.retry(
                exc=e, countdown=countdown_s, max_retries=MAX_TRANSIENT_RETRIES
            ) from e
