"""PostgreSQL failing under Parley, through a TCP proxy the test controls: every channel
gets a fast 503 (database_unavailable, Retry-After), nothing acknowledged is lost, no
traceback is logged per request, and service resumes with the first request or two
after the database is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from parley.api.state import state_of
from parley.app import create_app
from parley.client import Done, ParleyClient, ParleyError, TurnFailed
from parley.store import Database, upgrade_to_head
from tests.conftest import make_settings, postgres_url
from tests.support.live_server import LiveServer
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

T = TypeVar("T")


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", 5432) as running:
        yield running


@pytest.fixture
async def served(tmp_path: Path, proxy: TcpProxy) -> AsyncIterator[tuple[LiveServer, FastAPI]]:
    direct = await postgres_url()  # emptied first
    # Migrated directly: the faults are under a running service, and its tight timeouts
    # are for them, not for a start-up's DDL on a busy machine (that failed a CI run).
    database = Database(direct)
    try:
        await upgrade_to_head(database.engine)
    finally:
        await database.dispose()
    through = direct.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    settings = make_settings(
        tmp_path,
        database_url=through,
        auto_migrate=False,
        db_connect_timeout_seconds=1,
        db_statement_timeout_seconds=1,
        db_pool_timeout_seconds=1,
        llm_max_retries=0,
    )
    app = create_app(settings)
    with LiveServer(app) as server:
        yield server, app


async def _unavailable(call: object) -> ParleyError:
    with pytest.raises(ParleyError) as refused:
        await call  # type: ignore[misc]
    return refused.value


@pytest.mark.parametrize("fault", ["reset", "blackhole", "slow"])
async def test_a_database_fault_answers_503_on_every_channel_then_service_resumes(
    served: tuple[LiveServer, FastAPI], proxy: TcpProxy, fault: str
) -> None:
    server, _ = served
    async with ParleyClient(server.http_url, timeout=30) as parley:
        await parley.create_goal("Support", "Help.", goal_id="support")
        conversation = (await parley.create_conversation("support")).id
        before = await parley.send_message(conversation, "before the fault")
        proxy.set_mode(fault)  # type: ignore[arg-type]
        with capture_logs() as logs:
            whole = await _unavailable(parley.send_message(conversation, "during, whole"))
            streamed = await _unavailable(_drain(parley.stream_message(conversation, "sse")))
            async with parley.chat(conversation) as chat:
                frames = [event async for event in chat.send("during, ws")]
            read = await _unavailable(parley.get_conversation(conversation))
            async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
                ready = await http.get("/readyz")
        for refused in (whole, streamed, read):
            assert (refused.status, refused.code) == (503, "database_unavailable")
            assert refused.retry_after == 1
        (failed,) = frames
        assert isinstance(failed, TurnFailed)
        assert failed.error.code == "database_unavailable"
        assert ready.status_code == 503
        assert not [log for log in logs if log["log_level"] in ("error", "critical")]
        kinds = {log["kind"] for log in logs if log["event"] == "database_unavailable"}
        assert kinds, logs
        assert len([log for log in logs if log["event"] == "database_unavailable"]) == len(kinds)

        proxy.set_mode("forward")
        # Recovery is counted in requests, not timed: the first request after the fault
        # ends is served (seen in every run); one 503 more is allowed for a request that
        # meets a connection the fault broke, never a wait for a timeout or a pool refill.
        after, refused_after = await _once_back(
            lambda: parley.send_message(conversation, "after the fault")
        )
        assert refused_after <= 1
        stored = [m.content for m in (await parley.get_conversation(conversation)).messages]
    assert before.reply is not None
    assert after.reply is not None
    assert stored[0] == "before the fault"
    assert stored[-2] == "after the fault"
    assert not {"during, whole", "sse", "during, ws"} & set(stored)


async def test_a_reply_the_database_cannot_store_says_the_message_is_stored(
    served: tuple[LiveServer, FastAPI], proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message stored, the reply not: the client is told exactly that, as a 503."""
    server, app = served
    async with ParleyClient(server.http_url, timeout=30) as parley:
        await parley.create_goal("Support", "Help.", goal_id="support")
        conversation = (await parley.create_conversation("support")).id
        gateway = state_of(app).services.gateway
        complete = gateway.complete

        async def fault_then_complete(request: object) -> object:
            proxy.set_mode("reset")
            return await complete(request)  # type: ignore[arg-type]

        monkeypatch.setattr(gateway, "complete", fault_then_complete)
        error = await _unavailable(parley.send_message(conversation, "stored, unanswered"))
        assert error.status == 503
        assert "the message is stored" in error.message
        proxy.set_mode("forward")
        monkeypatch.setattr(gateway, "complete", complete)
        messages = (await _once_back(lambda: parley.get_conversation(conversation)))[0].messages
    assert [m.content for m in messages] == ["stored, unanswered"]


async def _once_back(call: Callable[[], Awaitable[T]]) -> tuple[T, int]:
    """``call()`` again while it answers 503, within a deadline; anything else is raised.
    Its answer, and how many 503s came before it."""
    refused = 0
    async with asyncio.timeout(20):
        while True:
            try:
                return await call(), refused
            except ParleyError as error:
                if error.status != 503:
                    raise
            refused += 1
            await asyncio.sleep(0.05)


async def _drain(events: object) -> None:
    async for event in events:  # type: ignore[attr-defined]
        assert not isinstance(event, Done)
