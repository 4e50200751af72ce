"""The PostgreSQL server the tests use: a database of each test process's own (pytest-xdist
runs several, and each empties its database before a test), created when missing."""

from __future__ import annotations

import os
import re

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

SERVER_URL = os.environ.get(
    "PARLEY_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def process_database_url(url: str = SERVER_URL, worker: str | None = None) -> str:
    """``url`` for a single test process; for pytest-xdist's worker ``gw1``, its database
    with ``_gw1`` appended, so that workers never empty each other's tables."""
    worker = worker if worker is not None else os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


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
