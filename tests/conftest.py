"""Fixtures that isolate each test on the real services of this machine.

Each test gets its own AMQP namespace (exchange and queue names), its own Redis key prefix on
Redis db 1, and the test run gets its own PostgreSQL schema in database ``test``, migrated
by Alembic. A missing service fails the run with the command that starts it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text

from infermq.services import check_services
from infermq.settings import Settings
from producer.client import Client
from stores.database import dispose_engines, get_engine
from stores.migrate import upgrade_to_head
from tests.support import WorkerProcess

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TEST_REDIS_DB = 1
TEST_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def base_settings(**overrides: object) -> Settings:
    """Settings on this machine's services, isolated by a fresh namespace and key prefix."""
    tag = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "redis_url": f"redis://127.0.0.1:6379/{TEST_REDIS_DB}",
        "database_url": TEST_DATABASE_URL,
        "namespace": f"t{tag}",
        "redis_prefix": f"t{tag}",
        "test_hooks": True,
        "torch_threads": 1,
        "publish_confirm_timeout_s": 5.0,
        # The trained verifier is not in every checkout; tests that need it ask for it.
        "cache_verifier": "off",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def database_schema() -> Iterator[str]:
    """One migrated schema for the whole run; dropped at the end."""
    problems = check_services(Settings(database_url=TEST_DATABASE_URL))
    if problems:
        pytest.exit("services missing:\n" + "\n".join(problems), returncode=3)
    schema = f"test_{uuid.uuid4().hex[:10]}"
    settings = Settings(database_url=TEST_DATABASE_URL, database_schema=schema)
    upgrade_to_head(settings)
    yield schema
    with get_engine(settings).begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    dispose_engines()


@pytest.fixture
def settings(database_schema: str) -> Iterator[Settings]:
    """Isolated settings for one test; its queues are deleted afterwards."""
    settings = base_settings(database_schema=database_schema)
    yield settings
    from tests.support import delete_namespace

    delete_namespace(settings)


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=False)
    yield client
    keys = list(client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def db_engine(settings: Settings) -> Engine:
    return get_engine(settings)


@pytest.fixture
def echo_settings(database_schema: str) -> Iterator[Settings]:
    """Isolated settings whose registry serves every task type with the test engine."""
    from tests.support import TEST_REGISTRY, delete_namespace

    settings = base_settings(database_schema=database_schema, registry_path=TEST_REGISTRY)
    yield settings
    delete_namespace(settings)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts real worker processes; stops every one at the end of the test."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, models: list[str], slots: int = 4) -> WorkerProcess:
        worker = WorkerProcess(settings, models, tmp_path / f"worker{len(started)}.log", slots)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def client_for() -> Iterator[Callable[[Settings], Client]]:
    clients: list[Client] = []

    def make(settings: Settings) -> Client:
        client = Client(settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
