"""The Celery tasks of a worker: thin shells around the job runner.

A task's outcome decides the message's fate: returning acks it; ``Reject(requeue=False)``
sends it to the dead-letter queue; ``Reject(requeue=True)`` gives it back to its queue
untouched (its model is not READY here); a PostgreSQL or Redis blip runs the delivery again
in place without counting another attempt (workers/transient.py), and an outage longer than
``transient_retry_for_s`` republishes it with backoff.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from infermq.errors import DeadLetter, ModelNotReady, TurnNotReady
from infermq.keys import RUN_JOB_TASK
from workers.maintenance import register_maintenance_tasks
from workers.runtime import WorkerRuntime
from workers.transient import TRANSIENT_ERRORS, Delivery, run_through_blips

MAX_TRANSIENT_RETRIES = 5


def register_tasks(app: Celery, runtime: WorkerRuntime) -> None:
    """Registers the job and maintenance tasks on ``app``, bound to ``runtime`` (the webhook
    task is registered before the runtime is built: its hook goes to the runner,
    ``register_webhook_task``)."""
    register_maintenance_tasks(app, runtime.settings)

    @app.task(name=RUN_JOB_TASK, bind=True, acks_late=True, ignore_result=True)
    def run_job(self: Task, message: dict[str, Any]) -> None:
        delivery = Delivery()
        try:
            # A PostgreSQL or Redis blip: this delivery runs again in place, its attempt counted
            # once (workers/transient.py); only a longer outage republishes it.
            run_through_blips(lambda: runtime.runner.run(message, delivery),
                              runtime.settings.transient_retry_for_s, f"task {self.request.id}")
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
