"""The benchmarks start from an empty PostgreSQL database, whatever was left in it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from bench.postgres import emptied, emptied_beside
from sqlalchemy import inspect

from parley.domain.keys import ApiKey, Role, digest
from parley.store import Database, Store, upgrade_to_head
from tests.conftest import postgres_url

pytestmark = pytest.mark.postgres


async def _leave_a_key(url: str) -> None:
    database = Database(url)
    try:
        await upgrade_to_head(database.engine)
        left = ApiKey("shop", Role.CLIENT, digest("parley_secret"), created_at=datetime.now(UTC))
        assert await Store(database).keys.add(left)  # what a test left there
    finally:
        await database.dispose()


async def _tables(url: str) -> list[str]:
    database = Database(url)
    try:
        async with database.engine.connect() as connection:
            return await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await database.dispose()


async def test_a_key_left_in_the_database_is_gone_before_a_benchmark_runs() -> None:
    """The whole-turn benchmark answered 401 to every request on a database where a
    test had left a key (development mode is only for a database without keys)."""
    url = await postgres_url()
    await _leave_a_key(url)
    await asyncio.to_thread(emptied, url)
    assert await _tables(url) == []


async def test_each_keys_variant_gets_an_empty_database_of_its_own() -> None:
    """The keys benchmark's three servers cannot share one database ("no key" needs one
    without keys): each gets one beside the benchmark's, made when missing, emptied."""
    url = await postgres_url()
    beside = await asyncio.to_thread(emptied_beside, url, "keys0")
    assert beside != url
    assert beside.endswith("_keys0")
    await _leave_a_key(beside)
    assert await asyncio.to_thread(emptied_beside, url, "keys0") == beside
    assert await _tables(beside) == []
