"""The benchmarks start from an empty PostgreSQL database, whatever was left in it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from bench.postgres import emptied
from sqlalchemy import inspect

from parley.domain.keys import ApiKey, Role, digest
from parley.store import Database, Store, upgrade_to_head
from tests.conftest import postgres_url

pytestmark = pytest.mark.postgres


async def test_a_key_left_in_the_database_is_gone_before_a_benchmark_runs() -> None:
    """The whole-turn benchmark answered 401 to every request on a database where a
    test had left a key (development mode is only for a database without keys)."""
    url = await postgres_url()
    database = Database(url)
    try:
        await upgrade_to_head(database.engine)
        left = ApiKey("shop", Role.CLIENT, digest("parley_secret"), created_at=datetime.now(UTC))
        assert await Store(database).keys.add(left)  # what a test left there
    finally:
        await database.dispose()
    await asyncio.to_thread(emptied, url)
    database = Database(url)
    try:
        async with database.engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await database.dispose()
    assert tables == []
