"""The cache on the path of a job: exact repeats at submit, paraphrases in the worker."""

from __future__ import annotations

from collections.abc import Callable

from infermq.settings import Settings
from producer.client import Client
from tests.support import WorkerProcess, queue_depth
from tests.test_real_engines import torch_settings  # noqa: F401 - fixture


def test_exact_repeat_is_answered_at_submit_without_publishing(
    echo_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(echo_settings)
    start_worker(echo_settings, ["echo"])
    first = client.submit("embed", "Cache me, please.")
    assert first.result(timeout_s=120).cache == "miss"
    queue = client.topology.queue_for("embed", "echo").name
    depth_before = queue_depth(echo_settings, queue)
    # Same meaning after normalization (case, spacing, trailing punctuation)
    repeat = client.submit("embed", "  cache ME,   please ")
    result = repeat.result(timeout_s=5)
    assert result.cache == "exact" and result.cache_source_job == first.id
    assert result.output == first.result(timeout_s=5).output
    assert queue_depth(echo_settings, queue) == depth_before
    # A different temperature or model is another question
    other = client.submit("generate", "Cache me, please.", params={"temperature": 0.0})
    assert other.result(timeout_s=120).cache == "miss"


def test_paraphrase_is_served_by_the_semantic_tier_with_its_source_job(
    torch_settings: Settings,  # noqa: F811
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(torch_settings)
    start_worker(torch_settings, ["minilm", "gpt2-tiny"])
    params = {"max_new_tokens": 4}
    first = client.submit("generate", "What is the capital city of France?", params=params)
    answer = first.result(timeout_s=170)
    paraphrase = client.submit("generate", "what's the capital of France", params=params)
    hit = paraphrase.result(timeout_s=170)
    assert hit.cache == "semantic"
    assert hit.cache_source_job == first.id and hit.output == answer.output
    assert hit.cache_similarity is not None and hit.cache_similarity < 1.0
    # A near-miss with another entity is not answered from the cache
    near_miss = client.submit("generate", "What is the capital city of Spain?", params=params)
    assert near_miss.result(timeout_s=170).cache == "miss"
