"""This replica's live-stream subscribers, by topic: ``publish`` wakes those of the
conversations a transaction appended events for (and the queue's), ``close`` ends them
all when the server drains. Bounded: past ``max_subscribers`` a new stream is refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from parley.domain.errors import ShuttingDownError, TooManyStreamsError
from parley.domain.live import QUEUE


class HubClosedError(ShuttingDownError):
    """The server drains: it takes no new stream."""


class _Subscription:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._woken = asyncio.Event()

    def wake(self) -> None:
        self._woken.set()

    async def wait(self, heartbeat: float) -> bool | None:
        try:
            async with asyncio.timeout(heartbeat):
                await self._woken.wait()
        except TimeoutError:
            pass
        woken = self._woken.is_set()
        self._woken.clear()
        return None if self._hub.closing else woken


class Hub:
    def __init__(self, max_subscribers: int) -> None:
        self.max_subscribers = max_subscribers
        self.closing = False
        self._topics: dict[str, set[_Subscription]] = {}
        self._count = 0

    def admit(self) -> None:
        if self.closing:
            raise HubClosedError()
        if self._count >= self.max_subscribers:
            raise TooManyStreamsError(self.max_subscribers)

    @contextmanager
    def subscribe(self, topic: str) -> Iterator[_Subscription]:
        self.admit()
        subscription = _Subscription(self)
        self._topics.setdefault(topic, set()).add(subscription)
        self._count += 1
        try:
            yield subscription
        finally:
            self._count -= 1
            subscribers = self._topics[topic]
            subscribers.discard(subscription)
            if not subscribers:
                del self._topics[topic]

    def publish(self, conversation_ids: Iterable[uuid.UUID]) -> None:
        """New events for these conversations: their streams and the queue's look."""
        for conversation_id in conversation_ids:
            self.wake(str(conversation_id))
        self.wake(QUEUE)

    def wake(self, topic: str) -> None:
        for subscription in self._topics.get(topic, ()):
            subscription.wake()

    def wake_all(self) -> None:
        """Every stream looks (wake-ups may have been missed: a listener reconnected)."""
        for subscribers in self._topics.values():
            for subscription in subscribers:
                subscription.wake()

    def close(self) -> None:
        """Every stream ends at its next look; no new one starts."""
        self.closing = True
        self.wake_all()

    def counts(self) -> dict[str, int]:
        """Open streams: the queue's, and the conversations' together."""
        queue = len(self._topics.get(QUEUE, ()))
        return {"queue": queue, "conversation": self._count - queue}
