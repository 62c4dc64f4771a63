"""Sessions through real jobs: turns in submission order, context across models, closing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from infermq.errors import SessionTerminated
from infermq.settings import Settings
from producer.client import Client
from tests.support import WorkerProcess
from tests.test_lose_nothing import open_gate, wait_at_gate


def test_session_jobs_run_in_order_and_carry_context_across_models(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(echo_settings)
    session = client.session()
    assert session.state() == "INIT"
    # Given two jobs submitted back to back with opposite priorities, the first held in the
    # engine by a gate
    first = session.submit("generate", "gate:turn1 my name is Ada", priority=0, model="echo")
    second = session.submit("generate", "what is my name?", priority=9, model="echo")
    start_worker(echo_settings, ["echo", "echo2"], slots=4)
    wait_at_gate(echo_settings, "turn1")
    # While the first is held, the second (higher priority) has not run
    assert second.status() in ("queued", "running")
    open_gate(echo_settings, "turn1")
    # Then the second runs after the first and sees its turn
    assert "my name is Ada" in first.result(timeout_s=120).output
    answer = second.result(timeout_s=120).output
    assert "gate:turn1 my name is Ada" in answer and answer.endswith("what is my name?")
    assert session.state() == "ACTIVE"
    # A later job on another model gets the same context
    third = session.submit("generate", "and again?", model="echo2").result(timeout_s=120)
    assert third.model == "echo2"
    assert third.output.startswith("[echo2]") and "what is my name?" in third.output
    # Closing the session refuses later jobs
    session.close()
    assert session.state() == "TERMINATED"
    with pytest.raises(SessionTerminated):
        session.submit("generate", "too late")
