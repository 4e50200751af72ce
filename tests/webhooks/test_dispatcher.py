"""The webhook dispatcher on SQLite and PostgreSQL, with a receiver that is away and a
clock the test moves: down for an hour, it is still tried (never more than an hour apart)
and gets every event once it is back, each once, in order per conversation; down for more
than a day, each delivery is tried for 24 hours, then failed and listed (for
``parley webhooks failed``), never dropped in silence."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timedelta
from itertools import pairwise

import httpx

from parley.store import Store
from parley.webhooks.dispatcher import MAX_BACKOFF_SECONDS, Dispatcher, Endpoint
from tests.store.helpers import escalated, open_turn, sample_goal
from tests.support.clock import Clock

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RETRY_WINDOW = timedelta(hours=24)


class AwayReceiver:
    """Refuses every connection until ``back_at`` on the test's clock; then keeps each
    event it receives. Each attempt is noted, by webhook id."""

    def __init__(self, clock: Clock, back_at: datetime) -> None:
        self.clock, self.back_at = clock, back_at
        self.attempts: dict[str, list[datetime]] = defaultdict(list)
        self.received: list[tuple[str, str, str]] = []  # (webhook id, conversation, type)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        webhook_id = request.headers["webhook-id"]
        self.attempts[webhook_id].append(self.clock())
        if self.clock() < self.back_at:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content)
        self.received.append((webhook_id, body["data"]["conversation_id"], body["type"]))
        return httpx.Response(204)

    def in_order(self) -> dict[str, list[str]]:
        types: dict[str, list[str]] = defaultdict(list)
        for _, conversation, kind in self.received:
            types[conversation].append(kind)
        return dict(types)


def _dispatcher(store: Store, receiver: AwayReceiver, clock: Clock) -> Dispatcher:
    return Dispatcher(
        store.outbox,
        [Endpoint("crm", "http://crm.example/hooks", SECRET)],
        timeout_seconds=10,
        retry_window=RETRY_WINDOW,
        backoff_base_seconds=1,
        transport=httpx.MockTransport(receiver),
        clock=clock,
    )


async def _handoffs(store: Store, dispatcher: Dispatcher) -> dict[str, list[str]]:
    """Two handoffs' events, after the endpoint started; what each conversation sends."""
    await store.goals.add(sample_goal())
    await dispatcher.deliver_due()  # the endpoint's cursor: events from now on
    worked, waiting = await escalated(store), await escalated(store)
    await open_turn(store, worked, "hello?")  # held for the agent
    await store.handoffs.assign(worked, "ann", holder=None, transfer=False)
    await store.handoffs.resolve(worked, holder="ann", closing=None)
    return {
        str(worked): [
            "conversation.escalated",
            "handoff.message",
            "handoff.assigned",
            "handoff.resolved",
        ],
        str(waiting): ["conversation.escalated"],
    }


async def _run(dispatcher: Dispatcher, clock: Clock, hours: float, step: timedelta) -> None:
    """The dispatcher's rounds as its loop runs them, the clock ``step`` apart."""
    until = clock.now + timedelta(hours=hours)
    while clock.now < until:
        await dispatcher.deliver_due()
        clock.now += step


def _largest_gap(times: list[datetime]) -> timedelta:
    return max((b - a for a, b in pairwise(times)), default=timedelta())


async def test_a_receiver_down_for_an_hour_gets_every_event_once_in_order(store: Store) -> None:
    clock = Clock()
    back_at = clock.now + timedelta(hours=1)
    receiver = AwayReceiver(clock, back_at)
    dispatcher = _dispatcher(store, receiver, clock)
    step = timedelta(seconds=30)
    try:
        sent = await _handoffs(store, dispatcher)
        await _run(dispatcher, clock, hours=2.5, step=step)  # retries wait an hour at most
    finally:
        await dispatcher.stop()
    assert receiver.in_order() == sent
    assert len(receiver.received) == len({webhook_id for webhook_id, _, _ in receiver.received})
    first = receiver.attempts[receiver.received[0][0]]
    assert len([t for t in first if t < back_at]) >= 8  # kept trying while it was away
    limit = timedelta(seconds=MAX_BACKOFF_SECONDS) + step
    assert all(_largest_gap(times) <= limit for times in receiver.attempts.values())
    assert await store.outbox.failed() == []


async def test_a_receiver_down_for_a_day_is_tried_for_24_hours_then_listed_failed(
    store: Store,
) -> None:
    clock = Clock()
    receiver = AwayReceiver(clock, back_at=clock.now + timedelta(days=30))
    dispatcher = _dispatcher(store, receiver, clock)
    started = clock.now
    try:
        sent = await _handoffs(store, dispatcher)
        await _run(dispatcher, clock, hours=27, step=timedelta(minutes=5))
    finally:
        await dispatcher.stop()
    assert receiver.received == []
    failed = await store.outbox.failed()
    assert sorted(d.type for d in failed) == sorted(t for types in sent.values() for t in types)
    assert {d.last_error for d in failed} == {"ConnectError"}
    first = receiver.attempts[f"evt_{min(d.event.id for d in failed)}"]
    assert first[-1] - started >= RETRY_WINDOW  # tried for the whole window
    assert first[-1] - started < RETRY_WINDOW + timedelta(seconds=MAX_BACKOFF_SECONDS) * 1.1
    assert len(first) >= 30  # about an hour apart once the backoff is at its cap
