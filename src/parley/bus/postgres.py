"""What other replicas commit, told to this one: one connection LISTENing on the event
log's channel (``store.events.CHANNEL``), to wake this replica's live streams, and on
the keys' (``store.keys.CHANNEL``), to drop the keys it keeps (the domain's
``KeyChanges``). NOTIFY is sent inside the writing transaction, so only what committed
is told.

The connection is reconnected with backoff and pinged every second (a half-open TCP
connection tells nothing); after each (re)connection every stream looks, since what it
missed meanwhile is in the log, and every kept key is read again. Kept keys are trusted
only while the last ping answered lately. No new component: the database the replicas
share."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from parley.bus.hub import Hub
from parley.store import events, keys

APPLICATION_NAME = "parley-listener"
PING_SECONDS = 1.0
PING_TIMEOUT_SECONDS = 5.0
# Kept keys are trusted this long after the listening connection last answered: a change
# told on a connection that went quiet, unseen here, holds at most this much longer.
KEYS_TRUSTED_SECONDS = 3.0
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
        self._key_epoch = 0
        self._answered_at: float | None = None  # the loop's time the connection last answered
        self.server_pid: int | None = None  # the listening connection's backend, if any

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="parley-postgres-listener")

    def epoch(self) -> int | None:
        """``KeyChanges``: changes with every key change told, and every (re)connection;
        None while not listening, or not answered within ``KEYS_TRUSTED_SECONDS``."""
        answered = self._answered_at
        if answered is None or asyncio.get_running_loop().time() - answered > KEYS_TRUSTED_SECONDS:
            return None
        return self._key_epoch

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
        connection = await asyncpg.connect(
            self._dsn,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={"application_name": APPLICATION_NAME},  # in pg_stat_activity
        )
        lost = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(events.CHANNEL, self._notified)
            await connection.add_listener(keys.CHANNEL, self._key_changed)
            self._key_changed()  # changes may have been missed while away
            self.server_pid = connection.get_server_pid()
            self._answered_at = loop.time()
            self.connected.set()
            self._hub.wake_all()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PING_SECONDS):
                        await lost.wait()
                if not lost.is_set():
                    async with asyncio.timeout(PING_TIMEOUT_SECONDS):
                        await connection.fetchval("SELECT 1")
                    self._answered_at = loop.time()
            raise ConnectionError("the listening connection was closed")
        finally:
            self._answered_at = None
            self.server_pid = None
            self.connected.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), PING_TIMEOUT_SECONDS)

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            conversation_id = uuid.UUID(payload)
        except ValueError:  # not Parley's: nothing to wake
            return
        self._hub.publish([conversation_id])

    def _key_changed(self, *_notification: object) -> None:
        self._key_epoch += 1
