"""Keys kept per replica on PostgreSQL: read once, then kept while the listening
connection tells every key change (NOTIFY in the changing transaction) and answers its
pings; read on every request while it cannot vouch (its connection killed, or its
backend stopped)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event

from parley.app import create_app
from parley.bus import Hub, PostgresListener
from parley.bus.postgres import APPLICATION_NAME, KEYS_TRUSTED_SECONDS, asyncpg_dsn
from parley.domain.keys import KeyService, Role
from parley.store import Database, Store
from parley.store.migrate import upgrade_to_head
from tests.conftest import POSTGRES_URL, make_settings, postgres_url
from tests.support.live_server import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@dataclass
class Replica:
    keys: KeyService
    listener: PostgresListener
    statements: list[str]


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[Replica, KeyService]]:
    """A replica that keeps keys (its own listener), and another replica's KeyService
    on a database connection of its own, which changes them."""
    url = await postgres_url()
    here, elsewhere = Database(url), Database(url)
    await upgrade_to_head(here.engine)
    statements: list[str] = []
    for engine in here.engines:
        event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    listener = PostgresListener(url, Hub(10))
    listener.start()
    keys = KeyService(Store(here).keys, lambda: datetime.now(UTC))
    keys.follow(listener)
    try:
        await _until(lambda: listener.epoch() is not None)
        yield (
            Replica(keys, listener, statements),
            KeyService(Store(elsewhere).keys, lambda: datetime.now(UTC)),
        )
    finally:
        keys.follow(None)
        await listener.stop()
        await here.dispose()
        await elsewhere.dispose()


async def _until(condition: Callable[[], bool | Awaitable[bool]], seconds: float = 20) -> None:
    async with asyncio.timeout(seconds):
        while True:
            outcome = condition()
            if outcome if isinstance(outcome, bool) else await outcome:
                return
            await asyncio.sleep(0.02)


async def _refused(keys: KeyService, secret: str) -> bool:
    return await keys.authenticate(secret) is None


async def test_a_key_is_read_once_and_dropped_when_another_replica_revokes_it(
    replicas: tuple[Replica, KeyService],
) -> None:
    here, elsewhere = replicas
    _, secret = await elsewhere.create("shop", Role.CLIENT)
    assert await here.keys.authenticate(secret) is not None
    read = len(here.statements)
    for _ in range(5):
        assert await here.keys.authenticate(secret) is not None
    assert len(here.statements) == read  # kept: no statement more
    await elsewhere.update_limits("shop", {"rpm": 7})
    await _until(lambda: _rpm(here.keys, secret, 7))
    await elsewhere.revoke("shop")
    # Told by NOTIFY: without it, the kept key would be taken for as long as pings answer.
    await _until(lambda: _refused(here.keys, secret))


async def _rpm(keys: KeyService, secret: str, rpm: int) -> bool:
    principal = await keys.authenticate(secret)
    return principal is not None and principal.limits.rpm == rpm


def _listener_pid(listener: PostgresListener) -> int:
    """The listening connection's backend (this test's own, not another server's)."""
    assert listener.server_pid is not None
    return listener.server_pid


async def test_keys_are_read_on_every_request_while_the_listener_is_away(
    replicas: tuple[Replica, KeyService],
) -> None:
    """Killed, it misses what changes meanwhile: nothing kept is taken until it is back,
    and what was kept before is read again then."""
    here, elsewhere = replicas
    _, secret = await elsewhere.create("shop", Role.CLIENT)
    assert await here.keys.authenticate(secret) is not None
    connection = await asyncpg.connect(asyncpg_dsn(POSTGRES_URL))
    try:
        pid = _listener_pid(here.listener)
        name = "SELECT application_name FROM pg_stat_activity WHERE pid = $1"
        assert await connection.fetchval(name, pid) == APPLICATION_NAME  # as the README says
        await connection.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await connection.close()
    await _until(lambda: here.listener.epoch() is None)
    read = len(here.statements)
    assert await here.keys.authenticate(secret) is not None
    assert len(here.statements) > read  # read, not kept
    await elsewhere.revoke("shop")
    assert await _refused(here.keys, secret)
    await _until(lambda: here.listener.epoch() is not None)  # reconnected
    assert await _refused(here.keys, secret)


async def test_a_listener_whose_pings_go_unanswered_stops_vouching_for_kept_keys(
    replicas: tuple[Replica, KeyService],
) -> None:
    """Its backend stopped (a connection gone quiet, as a half-open one is): a change
    told meanwhile would not arrive, so kept keys are read again once the last answer is
    older than KEYS_TRUSTED_SECONDS, and kept again once pings answer."""
    here, elsewhere = replicas
    _, secret = await elsewhere.create("shop", Role.CLIENT)
    assert await here.keys.authenticate(secret) is not None
    pid = _listener_pid(here.listener)
    os.kill(pid, signal.SIGSTOP)
    try:
        await _until(lambda: here.listener.epoch() is None, KEYS_TRUSTED_SECONDS + 20)
        # Before the unanswered ping gives the connection up: the trust lapsed by itself.
        assert here.listener.connected.is_set()
        await elsewhere.revoke("shop")  # its NOTIFY waits at the stopped backend
        assert await _refused(here.keys, secret)
    finally:
        os.kill(pid, signal.SIGCONT)
    await _until(lambda: here.listener.epoch() is not None)
    assert await _refused(here.keys, secret)


async def test_a_key_revoked_on_one_server_is_refused_by_the_other(tmp_path: Path) -> None:
    """Two replicas on one database: the other replica kept the key, and drops it when
    told; the replica that revoked it refuses it at once."""
    url = await postgres_url()
    settings: dict[str, Any] = {"api_keys": "bootstrap-secret", "database_url": url}
    with (
        LiveServer(create_app(make_settings(tmp_path / "a", **settings))) as a,
        LiveServer(create_app(make_settings(tmp_path / "b", **settings))) as b,
    ):
        admin = {"authorization": "Bearer bootstrap-secret"}
        async with httpx.AsyncClient(headers=admin) as http:
            made = await http.post(
                f"{a.http_url}/v1/keys/", json={"name": "shop", "role": "client"}
            )
            made.raise_for_status()
            shop = {"authorization": f"Bearer {made.json()['secret']}"}
            for server in (a, b):
                assert (await http.get(f"{server.http_url}/v1/goals/", headers=shop)).is_success
            (await http.post(f"{a.http_url}/v1/keys/shop/revoke")).raise_for_status()
            assert (await http.get(f"{a.http_url}/v1/goals/", headers=shop)).status_code == 401

            async def refused_on_b() -> bool:
                answer = await http.get(f"{b.http_url}/v1/goals/", headers=shop)
                return answer.status_code == 401

            await _until(refused_on_b)
