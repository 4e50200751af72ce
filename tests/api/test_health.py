import shutil
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import app_client, make_settings


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


@pytest.mark.integration  # it connects to a closed port on this machine
def test_readyz_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    """Readiness reflects the database: 503 when it cannot be reached."""
    settings = make_settings(
        tmp_path,
        database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        auto_migrate=False,
    )
    with app_client(settings) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unreachable"


def test_readyz_is_503_while_sqlite_cannot_take_a_write(tmp_path: Path) -> None:
    """A connection left inside a transaction holds SQLite's write lock: every write would
    wait and fail, so the instance is not ready (it said ready while locked)."""
    with app_client(make_settings(tmp_path)) as client:
        assert client.get("/readyz").status_code == 200
        holder = sqlite3.connect(tmp_path / "parley.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            response = client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "database_not_writable"
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert client.get("/readyz").status_code == 200


def test_readyz_is_503_while_sqlites_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes answered 503 on a full disk while /readyz said 200 throughout: the instance
    is not ready while its database's disk cannot take a write, and is again after."""
    free = [10 * 2**30]

    def usage(path: object) -> shutil._ntuple_diskusage:
        return shutil._ntuple_diskusage(100 * 2**30, 100 * 2**30 - free[0], free[0])

    monkeypatch.setattr(shutil, "disk_usage", usage)  # as parley.store.database reads it
    with app_client(make_settings(tmp_path)) as client:
        assert client.get("/readyz").status_code == 200
        free[0] = 64 * 1024
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_not_writable"
        free[0] = 10 * 2**30
        assert client.get("/readyz").status_code == 200
