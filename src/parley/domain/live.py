"""The live streams: what happens in one conversation (its handoff's steps and the
messages written while an agent has it) or in the whole handoff queue, as it happens,
and, for a subscriber that reconnects, from the event it saw last. Events are read from
the ``EventLog`` (they are stored with the change that made them), so a subscriber on any
replica sees each one once, in order; the ``Wakeups`` only say when to look."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from parley import defaults
from parley.domain.errors import ConversationNotFoundError
from parley.domain.keys import Principal
from parley.domain.models import LiveEvent
from parley.domain.ports import ConversationStore, EventLog, Wakeups

# The topic of the whole queue's stream (a conversation's topic is its id).
QUEUE = "handoffs"
# Events read at a time: a subscriber far behind catches up in pages.
BATCH = 100
# The shared read of whether a conversation still exists (event seqs start at 1).
_EXISTS = -1

T = TypeVar("T")


def _resumed(after: int | None, last: int) -> int:
    """Where a stream starts: after the client's last event, or now. An id past the last
    event (a client confusing streams, a database restored from a backup) starts now,
    instead of silently skipping what comes until the log reaches it."""
    return last if after is None else min(after, last)


# A stream's items: an event, or None when nothing happened for a while (a heartbeat the
# channel may send on, so that proxies keep the connection and a client gone is noticed).
LiveItem = LiveEvent | None


class LiveService:
    def __init__(
        self,
        log: EventLog,
        conversations: ConversationStore,
        wakeups: Wakeups,
        *,
        heartbeat_seconds: float = defaults.LIVE_HEARTBEAT_SECONDS,
    ) -> None:
        self._log = log
        self._conversations = conversations
        self._wakeups = wakeups
        self._heartbeat = heartbeat_seconds
        # Reads in flight, by what they read: a thousand streams woken by one event at the
        # same place share one query (1000 reads of one row took 1.3 s on SQLite).
        self._reads: dict[tuple[str, int], asyncio.Future[Any]] = {}

    async def conversation(
        self, conversation_id: uuid.UUID, caller: Principal, after: int | None
    ) -> AsyncGenerator[LiveItem, None]:
        """One conversation's events after its event ``after`` (None: from now on). A
        client key follows only the conversations it created; not found is raised here,
        before the stream starts."""
        self._wakeups.admit()
        conversation = await self._conversations.get(conversation_id)
        scope = caller.owner_scope
        if conversation is None or scope not in (None, conversation.owner):
            raise ConversationNotFoundError(conversation_id)
        start = _resumed(after, await self._log.last_seq(conversation_id))

        topic = str(conversation_id)

        async def read(seq: int) -> list[LiveEvent]:
            return await self._shared(
                (topic, seq), lambda: self._log.conversation_events(conversation_id, seq, BATCH)
            )

        async def still_there() -> None:
            """Woken with nothing new: its deletion wakes it too (its events went with
            it), and then the stream ends as the conversation's other routes answer."""
            if not await self._shared((topic, _EXISTS), exists):
                raise ConversationNotFoundError(conversation_id)

        async def exists() -> bool:
            return await self._conversations.get(conversation_id) is not None

        return self._follow(topic, start, read, lambda event: event.seq, still_there)

    async def queue(self, after: int | None) -> AsyncGenerator[LiveItem, None]:
        """Every conversation's handoff events after event ``after`` (None: from now on)."""
        self._wakeups.admit()
        start = _resumed(after, await self._log.last_id())

        async def read(last: int) -> list[LiveEvent]:
            return await self._shared((QUEUE, last), lambda: self._log.queue_events(last, BATCH))

        return self._follow(QUEUE, start, read, lambda event: event.id)

    async def _shared(self, key: tuple[str, int], read: Callable[[], Awaitable[T]]) -> T:
        pending = self._reads.get(key)
        if pending is None:
            pending = asyncio.ensure_future(read())
            self._reads[key] = pending
            pending.add_done_callback(lambda done: self._read_over(key, done))
        # Shielded: one stream closing does not cancel the read the others wait on.
        return await asyncio.shield(pending)

    def _read_over(self, key: tuple[str, int], done: asyncio.Future[Any]) -> None:
        self._reads.pop(key, None)
        if not done.cancelled():
            done.exception()  # seen here too: every stream waiting on it may have gone

    async def _follow(
        self,
        topic: str,
        cursor: int,
        read: Callable[[int], Awaitable[list[LiveEvent]]],
        position: Callable[[LiveEvent], int],
        still_there: Callable[[], Awaitable[None]] | None = None,
    ) -> AsyncGenerator[LiveItem, None]:
        # Subscribed before the first read: an event committed after that read wakes it.
        with self._wakeups.subscribe(topic) as subscription:
            woken: bool | None = False
            while True:
                events = await read(cursor)
                for event in events:
                    yield event
                    cursor = position(event)
                if len(events) == BATCH:
                    continue  # more waiting
                if woken and not events and still_there is not None:
                    await still_there()
                woken = await subscription.wait(self._heartbeat)
                if woken is None:
                    return  # the server drains: the client reconnects elsewhere
                if not woken:
                    yield None
