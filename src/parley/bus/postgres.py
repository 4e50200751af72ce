"""Wakes this replica's live streams when any replica commits an event: one connection
LISTENing on the event log's channel (``store.events.CHANNEL``; NOTIFY is sent inside
the transaction that appends the event, so only committed events are announced).

The connection is reconnected with backoff and pinged when quiet (a half-open TCP
connection tells nothing); after each (re)connection every stream looks, since what it
missed meanwhile is in the log. No new component: the database the replicas share."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from parley.bus.hub import Hub
from parley.store.events import CHANNEL

PING_SECONDS = 10.0
PING_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 10.0

logger = structlog.get_logger("parley.bus")


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL (postgresql+asyncpg://...) as asyncpg's own DSN."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresListener:
    def __init__(self, url: str, hub: Hub, *, on_error: Callable[[], None] | None = None) -> None:
        self._dsn = asyncpg_dsn(url)
        self._hub = hub
        self._on_error = on_error
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="parley-postgres-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database away: streams still poll the log
                self.connected.clear()
                if self._on_error is not None:
                    self._on_error()
                logger.warning("event_listener_disconnected", error=type(error).__name__)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    async def _listen(self) -> None:
        connection = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_SECONDS)
        lost = asyncio.Event()
        try:
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(CHANNEL, self._notified)
            self.connected.set()
            self._hub.wake_all()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PING_SECONDS):
                        await lost.wait()
                if not lost.is_set():
                    async with asyncio.timeout(PING_TIMEOUT_SECONDS):
                        await connection.fetchval("SELECT 1")
            raise ConnectionError("the listening connection was closed")
        finally:
            self.connected.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), PING_TIMEOUT_SECONDS)

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            conversation_id = uuid.UUID(payload)
        except ValueError:  # not Parley's: nothing to wake
            return
        self._hub.publish([conversation_id])
