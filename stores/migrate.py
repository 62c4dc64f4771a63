"""Runs Alembic's migrations from code, so ``infermq migrate`` needs no alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.exc import OperationalError

import migrations
from infermq.errors import ServiceUnavailable
from infermq.settings import Settings


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["settings"] = settings
    return config


def upgrade_to_head(settings: Settings) -> None:
    """Brings the database's schema to the newest migration.

    Raises:
        ServiceUnavailable: PostgreSQL cannot be reached.
    """
    try:
        command.upgrade(alembic_config(settings), "head")
    except OperationalError as e:
        raise ServiceUnavailable(
            f"PostgreSQL at {settings.database_url} cannot be reached ({e.orig}): is it running? "
            "`infermq services` starts it."
        ) from e
