"""The PostgreSQL server the tests use: a database of each test process's own (pytest-xdist
runs several, and each empties its database before a test), created when missing."""

from __future__ import annotations

import os

from sqlalchemy import make_url

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
