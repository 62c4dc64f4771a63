"""Alembic environment: migrates the database and schema that infermq's settings name."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from infermq.settings import Settings
from infermq.tables import metadata
from stores.database import get_engine


def run_migrations_online() -> None:
    settings: Settings = context.config.attributes.get("settings") or Settings()
    engine = get_engine(settings)
    with engine.connect() as connection:
        if settings.database_schema:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{settings.database_schema}"'))
            connection.commit()
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
