"""Migrations as a first deploy runs them: one per pod, at once."""

from __future__ import annotations

import asyncio

import pytest

from parley.store import Database, upgrade_to_head
from tests.conftest import postgres_url

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


async def test_three_concurrent_migrations_of_a_fresh_database_all_succeed() -> None:
    """Each pod's init container migrates: on a fresh PostgreSQL database three at once
    left two failing on a duplicate key, and the first deploy crash-looping."""
    url = await postgres_url()
    databases = [Database(url) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(upgrade_to_head(database.engine) for database in databases),
            return_exceptions=True,
        )
        assert results == [None, None, None]
        assert await databases[0].ping()
    finally:
        for database in databases:
            await database.dispose()
