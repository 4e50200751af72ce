"""make test's processes each empty a PostgreSQL database of their own."""

from __future__ import annotations

from tests.support.postgres import process_database_url

SERVER = "postgresql+asyncpg://postgres:secret@127.0.0.1:5432/test"


def test_a_single_test_process_uses_the_configured_database() -> None:
    assert process_database_url(SERVER, worker="") == SERVER


def test_each_xdist_worker_gets_a_database_of_its_own_on_the_same_server() -> None:
    first, second = (process_database_url(SERVER, worker=name) for name in ("gw0", "gw1"))
    assert first == "postgresql+asyncpg://postgres:secret@127.0.0.1:5432/test_gw0"
    assert second.endswith("/test_gw1")
