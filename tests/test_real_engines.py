"""Real outputs from the torch engine, through a real worker process."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infermq.settings import Settings
from producer.client import Client
from tests.conftest import base_settings
from tests.support import WorkerProcess, delete_namespace

TORCH_REGISTRY = Path(__file__).parent / "data" / "registry_torch.toml"


@pytest.fixture
def torch_settings(database_schema: str) -> Iterator[Settings]:
    settings = base_settings(database_schema=database_schema, registry_path=TORCH_REGISTRY,
                             models_dir=Path(".models").absolute())
    yield settings
    delete_namespace(settings)


def test_embedding_and_generation_come_back_from_a_torch_worker(
    torch_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client_for: Callable[[Settings], Client],
) -> None:
    client = client_for(torch_settings)
    embed = client.submit("embed", "RabbitMQ delivers the job to a worker.")
    generate = client.submit("generate", "Once upon a time",
                             params={"max_new_tokens": 8, "temperature": 0.0})
    chat = client.submit("generate", [{"role": "user", "content": "Say hello"}],
                         params={"max_new_tokens": 4})
    start_worker(torch_settings, ["minilm", "gpt2-tiny"])

    vector = embed.result(timeout_s=170).output
    assert len(vector) == 384
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-3)

    text = generate.result(timeout_s=170)
    assert isinstance(text.output, str) and text.output
    assert text.model == "gpt2-tiny" and text.tokens and text.tokens > 0
    assert isinstance(chat.result(timeout_s=170).output, str)
    # The tokens streamed while generating add up to the text.
    assert "".join(generate.stream(timeout_s=10)) == text.output
