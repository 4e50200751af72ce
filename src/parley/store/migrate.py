"""Run the Alembic migrations from code (at start-up and from ``parley migrate``)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).with_name("migrations")
# One key for every Parley on a PostgreSQL database: concurrent runs (the migration init
# container of each pod of a first deploy) wait for each other, and the later ones find
# nothing left to do. Without it, two of three failed on a duplicate key.
MIGRATION_LOCK_KEY = 0x7061726C6579  # "parley"


class _OnlyUpgrades(logging.Filter):
    """Of Alembic's INFO lines, only those that say a migration ran: its context lines
    ("Context impl SQLiteImpl.") came on every start and said nothing to an operator."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or record.getMessage().startswith("Running ")


logging.getLogger("alembic.runtime.migration").addFilter(_OnlyUpgrades())


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade_to_head(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Held to the end of this transaction, which the migrations run in.
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        await connection.run_sync(
            lambda sync_connection: command.upgrade(alembic_config(sync_connection), "head")
        )
