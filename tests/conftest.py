"""Shared fixtures: settings on a throw-away SQLite file, apps, clients and databases; and
the test tiers (``make check`` runs what is neither ``integration`` nor ``slow``)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from bench.postgres import drop_parley_tables, ensure_database
from fastapi import FastAPI
from fastapi.testclient import TestClient

from parley.app import create_app
from parley.config import Settings
from parley.llm.provider import LLMProvider
from parley.store import Database, Store, upgrade_to_head
from tests.support.live_server import LiveServer
from tests.support.postgres import process_database_url

# This test process's database on the PostgreSQL server (one per pytest-xdist worker).
POSTGRES_URL = process_database_url()

# The tests' own HTTP requests wait up to 30 s, not httpx's 5 s: with make test's three
# processes on two cores, a plain request (a key made, a /metrics poll) has taken longer
# than 5 s, twice in five fresh-clone runs. Every wait in these tests has a deadline of
# its own; a test of a timeout sets its timeout, and Parley's clients set theirs.
TEST_HTTP_TIMEOUT = httpx.Timeout(30.0)
for _function in (httpx.Client.__init__, httpx.AsyncClient.__init__, httpx.request,
                  httpx.get, httpx.options, httpx.head, httpx.post, httpx.put,
                  httpx.patch, httpx.delete):  # fmt: skip
    assert _function.__kwdefaults__ is not None
    _function.__kwdefaults__["timeout"] = TEST_HTTP_TIMEOUT


TIERS = ("integration", "slow")
POSTGRES_GROUP = "postgresql"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("postgres"):  # a server: never in make check
            item.add_marker(pytest.mark.integration)
            # `make test` runs the suite in parallel processes (pytest-xdist, --dist
            # loadgroup): the PostgreSQL tests all run in one of them, one at a time, as
            # the server's 100 connections allow (a pool of 50 here, three replicas there;
            # spread over four processes they ran out).
            item.add_marker(pytest.mark.xdist_group(POSTGRES_GROUP))


@pytest.fixture(autouse=True)
def _unit_tests_start_nothing(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test in neither tier starts no server, process or database connection: ``make
    check`` runs those, and stays fast only while that holds. One that does fails here,
    and says which marker it needs."""
    if any(request.node.get_closest_marker(tier) for tier in TIERS):
        return

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError(
            f"{request.node.nodeid} starts a server, a process or a connection to a server:"
            " mark it @pytest.mark.integration (or slow), or keep it in process"
        )

    monkeypatch.setattr(LiveServer, "start", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    # TCP to a server (PostgreSQL, Redis, a fake upstream); in-process transports and
    # SQLite files stay allowed.
    monkeypatch.setattr(socket.socket, "connect", _loopback_refused(refuse))
    monkeypatch.setattr(socket, "create_connection", refuse)


def _loopback_refused(refuse: Callable[..., None]) -> Callable[..., None]:
    connect = socket.socket.connect

    def connect_unless_tcp(sock: socket.socket, address: object) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse()
        connect(sock, address)  # type: ignore[arg-type]

    return connect_unless_tcp


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}",
        "llm_provider": "simulated",
        "sim_ttft_seconds": 0.0,
        "sim_token_delay_seconds": 0.0,
        "llm_retry_backoff_seconds": 0.0,
        "log_format": "json",
        "log_level": "WARNING",
        # Load tests drive hundreds of requests from one address; the limits have their own.
        "rate_limit_per_minute": 0,
        # Tests scrape right after acting; the cache has its own tests.
        "metrics_cache_seconds": 0,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def app_client(settings: Settings, provider: LLMProvider | None = None) -> TestClient:
    """A client for an app with a given provider; use as a context manager."""
    return TestClient(create_app(settings, provider=provider))


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.integration]),
    ]
)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both backends: SQLite on a file, and the PostgreSQL server (emptied first)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    return await postgres_url()


_created: list[str] = []  # this process's database, once it exists


async def postgres_url() -> str:
    """This process's database on the PostgreSQL server (created the first time), its
    tables dropped first; skipped (failed under CI) when the server cannot be reached."""
    try:
        if not _created:
            await ensure_database(POSTGRES_URL)
            _created.append(POSTGRES_URL)
        await drop_parley_tables(POSTGRES_URL)
    except OSError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and is not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    return POSTGRES_URL


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    database = Database(database_url)
    await upgrade_to_head(database.engine)
    try:
        yield Store(database)
    finally:
        await database.dispose()
