"""Reaching the database at start-up: a SQLite file in a directory that does not exist is
refused in one line before any connection is tried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from parley.store import Database
from parley.store.startup import DatabaseStartupError, migrate


async def test_a_sqlite_file_whose_directory_is_missing_is_refused_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trying to connect started aiosqlite's thread, which, failing, could post its answer
    to a loop already closed by `parley migrate`'s exit: a traceback after the one line
    (seen once in CI in tests/integration/test_database_at_start.py)."""

    def no_connection(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a connection was tried")

    monkeypatch.setattr(aiosqlite, "connect", no_connection)
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'parley.db'}")
    try:
        with pytest.raises(DatabaseStartupError) as refused:
            await migrate(database)
    finally:
        await database.dispose()
    assert "cannot open the file (does its directory exist" in str(refused.value)
