"""The benchmarks' PostgreSQL database, emptied of Parley's tables before each use: what
an earlier run or a test left there changes what is measured (a key left behind turned
every request of the whole-turn benchmark into a 401). ``parley serve`` migrates it."""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import make_url, text
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


async def ensure_database(url: str) -> None:
    """Create the URL's database when missing (on the server's `postgres` database)."""
    target = make_url(url)
    name = target.database or ""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"database name {name!r}: use [a-z0-9_]")
    engine = create_async_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            exists = await connection.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if not exists:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()


def emptied_beside(url: str, suffix: str) -> str:
    """A database beside ``url``'s on the same server (its name with ``_suffix``), created
    when missing and emptied of Parley's tables: for servers that must not share one."""
    parsed = make_url(url)
    beside = parsed.set(database=f"{parsed.database}_{suffix}")
    rendered = beside.render_as_string(hide_password=False)
    asyncio.run(ensure_database(rendered))
    return emptied(rendered)
