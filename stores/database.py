"""The SQLAlchemy engine for the configured PostgreSQL, one per process and URL."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, create_engine

from infermq.settings import Settings

_engines: dict[tuple[str, str | None], Engine] = {}
_lock = threading.Lock()


def get_engine(settings: Settings) -> Engine:
    """A pooled engine whose connections use the settings' schema as their search path."""
    key = (settings.database_url, settings.database_schema)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            connect_args = {"connect_timeout": 5}
            if settings.database_schema:
                connect_args["options"] = f"-csearch_path={settings.database_schema}"  # type: ignore[assignment]
            # A pool as large as the threads that use it (worker slots, submitters): opening
            # connections per job cost more PostgreSQL CPU than the jobs' own statements. No
            # pre-ping round trip per checkout: a dropped connection fails one statement, which
            # callers treat as transient (the worker retries the job).
            engine = create_engine(
                settings.database_url,
                connect_args=connect_args,
                pool_size=max(10, settings.task_threads + 4),
                max_overflow=64,
                pool_pre_ping=False,
                pool_recycle=1800,
            )
            _engines[key] = engine
        return engine


def dispose_engines() -> None:
    """Closes every pooled connection (after fork, or at the end of a test run)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
