"""``DELETE /v1/jobs/{id}`` end to end: a real gateway process and a real worker whose only slot
is held at the test engine's gate, so the cancelled job is still waiting in its queue."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from infermq.errors import JobFailed
from infermq.keys import RedisKeys
from infermq.settings import Settings
from producer.client import Client
from stores.connections import get_redis
from stores.jobstore import transitions_of
from tests.gateway_support import GatewayProcess
from tests.support import WorkerProcess
from tests.test_gateway import read_events
from tests.test_lose_nothing import GATE_WAIT_S, open_gate, wait_at_gate


@pytest.fixture
def gateway(echo_settings: Settings, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(echo_settings.model_copy(update={"gateway_auth": "off"}),
                             tmp_path / "gateway.log")
    yield process
    process.stop()


def test_cancelled_job_ends_cancelled_without_reaching_the_engine(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
    gateway: GatewayProcess,
) -> None:
    client = client_for(echo_settings)
    with httpx.Client(base_url=gateway.url, timeout=GATE_WAIT_S) as api:
        # Given a worker with one slot, held by a job waiting at the engine's gate
        start_worker(echo_settings, ["echo"], slots=1)
        holder = submit(api, "gate:hold the only slot")
        wait_at_gate(echo_settings, "hold")
        # And a job queued behind it, which would stop at a gate of its own if it ever ran
        queued = submit(api, "gate:never this job must not run")
        assert api.get(f"/v1/jobs/{queued}").json()["status"] == "queued"

        # When it is cancelled over HTTP, then the slot frees up
        cancel = api.delete(f"/v1/jobs/{queued}")
        assert cancel.status_code == 202, cancel.text
        assert cancel.json() == {"id": queued, "status": "queued", "cancel_requested": True}
        open_gate(echo_settings, "hold")

        # Then the SDK's handle raises JobFailed with status cancelled
        with pytest.raises(JobFailed) as failed:
            client.job(queued).result(timeout_s=GATE_WAIT_S)
        assert failed.value.status == "cancelled"
        # and the job never reached the engine: nobody entered its gate, it never ran
        gate_entered = RedisKeys(echo_settings.redis_prefix).test_gate_entered("never")
        assert get_redis(echo_settings).llen(gate_entered) == 0
        assert transitions_of(client.engine, queued)[-1] == "cancelled"
        statuses = [e["data"] for e in read_events(api, queued, None) if e["event"] == "status"]
        assert statuses == ['{"status":"queued"}', '{"status":"cancelled"}'], statuses
        # while the job that held the slot finished as usual
        assert client.job(holder).result(timeout_s=GATE_WAIT_S).output == \
            "gate:hold the only slot"

        # The gateway reports it cancelled, and a second cancel asks for nothing
        view = api.get(f"/v1/jobs/{queued}").json()
        assert view["status"] == "cancelled" and view["result"]["status"] == "cancelled"
        again = api.delete(f"/v1/jobs/{queued}")
        assert again.status_code == 202
        assert again.json() == {"id": queued, "status": "cancelled", "cancel_requested": False}


def submit(api: httpx.Client, text: str) -> str:
    answer = api.post("/v1/jobs", json={"task_type": "generate", "input": text})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])
