"""The webhook outbox on SQLite and PostgreSQL: a new endpoint gets events from now on,
each event once; a conversation's deliveries go one at a time, in order; a claim is a
lease (two claimers never share one; one that dies lets another retry after the lease);
failed ones are listed and queued again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from parley.store import Store
from parley.webhooks import webhook_type
from tests.store.helpers import database_store, escalated, open_turn, sample_goal

LEASE = timedelta(seconds=30)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres])])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with database_store(request.param, tmp_path) as database:
        yield database


def _now() -> datetime:
    return datetime.now(UTC)


async def test_a_new_endpoint_gets_events_from_now_on_each_once(store: Store) -> None:
    await store.goals.add(sample_goal())
    await escalated(store)  # before the endpoint existed: not sent
    assert await store.outbox.queue_new(["crm"], webhook_type, _now()) == 0
    conversation = await escalated(store)
    await open_turn(store, conversation, "hello?")  # handoff.message
    await store.handoffs.assign(conversation, "ann", holder=None, transfer=False)
    await store.handoffs.unassign(conversation, holder="ann")  # not sent
    assert await store.outbox.queue_new(["crm", "audit"], webhook_type, _now()) == 3
    assert await store.outbox.queue_new(["crm", "audit"], webhook_type, _now()) == 0
    pending, oldest = await store.outbox.stats()
    assert pending == 3 + 0  # "audit" is new: from now on
    assert oldest is not None


async def test_a_conversations_deliveries_go_one_at_a_time_in_order(store: Store) -> None:
    await store.goals.add(sample_goal())
    await store.outbox.queue_new(["crm"], webhook_type, _now())
    first, second = await escalated(store), await escalated(store)
    await store.handoffs.assign(first, "ann", holder=None, transfer=False)
    await store.outbox.queue_new(["crm"], webhook_type, _now())
    batch = await store.outbox.claim(_now(), LEASE, 10)
    assert [(d.event.conversation_id, d.type) for d in batch] == [
        (first, "conversation.escalated"),
        (second, "conversation.escalated"),
    ]
    assert await store.outbox.claim(_now(), LEASE, 10) == []  # leased; the next waits
    await store.outbox.delivered(batch[0], _now())
    (after,) = await store.outbox.claim(_now(), LEASE, 10)
    assert (after.event.conversation_id, after.type) == (first, "handoff.assigned")


async def test_a_claim_dying_is_delivered_again_after_its_lease(store: Store) -> None:
    await store.goals.add(sample_goal())
    await store.outbox.queue_new(["crm"], webhook_type, _now())
    await escalated(store)
    await store.outbox.queue_new(["crm"], webhook_type, _now())
    (taken,) = await store.outbox.claim(_now(), LEASE, 10)  # its replica dies here
    assert taken.attempts == 1
    assert await store.outbox.claim(_now() + LEASE / 2, LEASE, 10) == []
    (again,) = await store.outbox.claim(_now() + LEASE * 2, LEASE, 10)
    assert (again.event.id, again.attempts) == (taken.event.id, 2)


async def test_claimers_at_once_never_share_a_delivery(store: Store) -> None:
    await store.goals.add(sample_goal())
    await store.outbox.queue_new(["crm"], webhook_type, _now())
    for _ in range(12):
        await escalated(store)
    await store.outbox.queue_new(["crm"], webhook_type, _now())
    batches = await asyncio.gather(*(store.outbox.claim(_now(), LEASE, 4) for _ in range(5)))
    taken = [d.event.id for batch in batches for d in batch]
    assert len(taken) == len(set(taken)) == 12


async def test_failed_deliveries_are_listed_and_queued_again(store: Store) -> None:
    await store.goals.add(sample_goal())
    await store.outbox.queue_new(["crm"], webhook_type, _now())
    conversation = await escalated(store)
    await store.handoffs.assign(conversation, "ann", holder=None, transfer=False)
    await store.outbox.queue_new(["crm"], webhook_type, _now())
    (dead,) = await store.outbox.claim(_now(), LEASE, 10)
    await store.outbox.give_up(dead, "HTTP 500")
    (failed,) = await store.outbox.failed()
    assert (failed.event.id, failed.state, failed.last_error) == (
        dead.event.id,
        "failed",
        "HTTP 500",
    )
    (next_one,) = await store.outbox.claim(_now(), LEASE, 10)  # the dead one no longer blocks
    assert next_one.type == "handoff.assigned"
    assert await store.outbox.redeliver(dead.event.id, None, _now()) == 1
    assert await store.outbox.redeliver(dead.event.id, None, _now()) == 0  # pending now
    assert await store.outbox.failed() == []
