"""Database statement metrics, by operation, from SQLAlchemy's engine events."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from parley.observability import DatabaseMetrics, new_registry
from parley.observability.sqlalchemy import instrument_engine, operation_of
from parley.store import Database
from tests.support.metrics import value


@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("SELECT 1", "select"),
        ("  select * from goals", "select"),
        ("INSERT INTO goals VALUES (1)", "insert"),
        ("UPDATE conversations SET status = 'x' RETURNING id", "update"),
        ("DELETE FROM goals", "delete"),
        ("WITH x AS (SELECT 1) DELETE FROM goals", "delete"),
        ("PRAGMA foreign_keys=ON", "other"),
        ("CREATE TABLE t (id int)", "other"),
        ("", "other"),
        ("DROP TABLE students; --", "other"),
    ],
)
def test_operation_comes_from_a_fixed_set(statement: str, operation: str) -> None:
    assert operation_of(statement) == operation


async def test_statements_are_counted_and_timed(database_url: str) -> None:
    registry = new_registry()
    metrics = DatabaseMetrics.register(registry)
    database = Database(database_url)
    instrument_engine(database.engine, metrics)
    try:
        async with database.engine.connect() as connection:
            for _ in range(3):
                await connection.execute(text("SELECT 1"))
            with pytest.raises(Exception):  # noqa: B017,PT011  # any driver error
                await connection.execute(text("SELECT * FROM no_such_table"))
    finally:
        await database.dispose()
    selects = value(registry, "db_queries_total", operation="select")
    assert selects == 4  # failed statements count too
    assert value(registry, "db_query_duration_seconds_count", operation="select") == 4
