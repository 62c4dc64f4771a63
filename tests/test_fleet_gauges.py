"""The beat's fleet gauges: every job queue's depth, the dead letters and the sessions by
state, read from the real broker and PostgreSQL on each scrape."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infermq.settings import Settings
from producer.client import Client
from workers.fleet_gauges import fleet_registry


def scrape(settings: Settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry, gauges = fleet_registry(settings)
    try:
        text = generate_latest(registry).decode()
    finally:
        gauges.close()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_fleet_gauges_count_waiting_jobs_per_queue_and_sessions_per_state(
    echo_settings: Settings, client_for: Callable[[Settings], Client],
) -> None:
    # Given two jobs waiting for the echo model (no worker runs) and one new session
    client = client_for(echo_settings)
    init_before = scrape(echo_settings).get(("infermq_sessions", (("state", "INIT"),)), 0.0)
    for i in range(2):
        client.submit("generate", f"wait here {i}")
    client.session()

    # When beat is scraped
    samples = scrape(echo_settings)

    # Then the queue's depth, the empty dead-letter queue and the new session are there
    labels = (("model", "echo"), ("task_type", "generate"))
    assert samples[("infermq_queue_messages_ready", labels)] == 2
    assert samples[("infermq_dead_letter_messages", ())] == 0
    assert samples[("infermq_sessions", (("state", "INIT"),))] == init_before + 1
    assert ("infermq_sessions", (("state", "TERMINATED"),)) in samples
    # and the registry's bounds, which the alert rules compare against
    assert samples[("infermq_model_max_backlog_messages", (("model", "echo"),))] == 1000
