"""The benchmarks' PostgreSQL database, emptied of Parley's tables before each use: what
an earlier run or a test left there changes what is measured (a key left behind turned
every request of the whole-turn benchmark into a 401). ``parley serve`` migrates it."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from parley.store.tables import metadata


async def drop_parley_tables(url: str) -> None:
    """Drop every table Parley's migrations make (and their record) from ``url``'s
    database; the tests empty theirs so too."""
    tables = ", ".join([*metadata.tables, "alembic_version"])
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE IF EXISTS {tables} CASCADE"))
    finally:
        await engine.dispose()


def emptied(url: str) -> str:
    """``url``, once Parley's tables (and their migration record) are dropped from it."""
    asyncio.run(drop_parley_tables(url))
    return url
