"""Webhook deliveries from the event log (the transactional outbox: an event commits with
the change it records). Each endpoint has a cursor over the log: whichever replica takes
it queues the events after it as deliveries, once. Deliveries are claimed with a lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL: two replicas never take the same one), one per
conversation and endpoint at a time, oldest first, so a conversation's events arrive in
order; a replica that dies mid-delivery leaves a lease that runs out, and another
delivers it again (at least once)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import aliased

from parley.domain.models import LiveEvent, WebhookDelivery
from parley.store.database import Database
from parley.store.events import EVENT_COLUMNS, event_rows
from parley.store.rows import aggregated_utc, to_live_event
from parley.store.tables import CONVERSATION_EVENTS, WEBHOOK_CURSORS, WEBHOOK_DELIVERIES

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
_D = WEBHOOK_DELIVERIES.c
_C = WEBHOOK_CURSORS.c
_E = CONVERSATION_EVENTS.c
_NEW_CURSOR = {
    name: dialect_insert(WEBHOOK_CURSORS).on_conflict_do_nothing(index_elements=[_C.endpoint])
    for name, dialect_insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}

# An event -> the webhook type it is sent as (None: not sent).
Classify = Callable[[LiveEvent], str | None]


class OutboxRepository:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def queue_new(
        self, endpoints: Sequence[str], classify: Classify, now: datetime, limit: int = 500
    ) -> int:
        """Queues the events after each endpoint's cursor; how many deliveries it made."""
        return await self._db.run_transaction(_queue_new, endpoints, classify, now, limit)

    async def claim(self, now: datetime, lease: timedelta, limit: int) -> list[WebhookDelivery]:
        return await self._db.run_transaction(_claim, now, lease, limit)

    async def delivered(self, delivery: WebhookDelivery, now: datetime) -> None:
        await self._db.run_transaction(
            _set, delivery, state=DELIVERED, delivered_at=now, last_error=None
        )

    async def retry(self, delivery: WebhookDelivery, at: datetime, error: str) -> None:
        await self._db.run_transaction(_set, delivery, next_attempt_at=at, last_error=error[:200])

    async def give_up(self, delivery: WebhookDelivery, error: str) -> None:
        await self._db.run_transaction(_set, delivery, state=FAILED, last_error=error[:200])

    async def failed(self, limit: int = 100) -> list[WebhookDelivery]:
        """Deliveries given up on (dead letters), the newest first."""
        return await self._db.run_transaction(_failed, limit)

    async def redeliver(self, event_id: int, endpoint: str | None, now: datetime) -> int:
        """A failed delivery of that event (to that endpoint, or every one) is queued
        again, its retry window from now; how many."""
        return await self._db.run_transaction(_redeliver, event_id, endpoint, now)

    async def stats(self) -> tuple[int, datetime | None]:
        """Deliveries pending, and when the oldest of them was queued."""
        return await self._db.run_transaction(_stats)


def _queue_new(
    conn: Connection, endpoints: Sequence[str], classify: Classify, now: datetime, limit: int
) -> int:
    queued = 0
    last = conn.execute(select(func.coalesce(func.max(_E.id), 0))).scalar_one()
    for endpoint in endpoints:
        # A new endpoint gets events from now on, not the whole history.
        conn.execute(_NEW_CURSOR[conn.dialect.name].values(endpoint=endpoint, last_event_id=last))
        cursor = conn.execute(
            select(_C.last_event_id).where(_C.endpoint == endpoint).with_for_update()
        ).scalar_one()
        query = (
            select(*EVENT_COLUMNS)
            .select_from(event_rows())
            .where(_E.id > cursor)
            .order_by(_E.id)
            .limit(limit)
        )
        rows = conn.execute(query).all()
        for row in rows:
            event = to_live_event(row)
            kind = classify(event)
            if kind is None:
                continue
            conn.execute(
                insert(WEBHOOK_DELIVERIES).values(
                    event_id=event.id,
                    endpoint=endpoint,
                    conversation_id=event.conversation_id,
                    type=kind,
                    state=PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
            queued += 1
        if rows:
            conn.execute(
                update(WEBHOOK_CURSORS)
                .where(_C.endpoint == endpoint)
                .values(last_event_id=rows[-1].id)
            )
    return queued


_EARLIER = aliased(WEBHOOK_DELIVERIES)


def _claim(conn: Connection, now: datetime, lease: timedelta, limit: int) -> list[WebhookDelivery]:
    # Only the oldest pending delivery of its conversation and endpoint: order kept.
    first_in_line = ~exists().where(
        and_(
            _EARLIER.c.endpoint == _D.endpoint,
            _EARLIER.c.conversation_id == _D.conversation_id,
            _EARLIER.c.state == PENDING,
            _EARLIER.c.event_id < _D.event_id,
        )
    )
    due = (
        select(_D.event_id, _D.endpoint)
        .where(_D.state == PENDING, _D.next_attempt_at <= now, first_in_line)
        .order_by(_D.event_id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=WEBHOOK_DELIVERIES)
    )
    keys = conn.execute(due).all()
    claimed = []
    for event_id, endpoint in keys:
        conn.execute(
            update(WEBHOOK_DELIVERIES)
            .where(_D.event_id == event_id, _D.endpoint == endpoint)
            .values(next_attempt_at=now + lease, attempts=_D.attempts + 1)
        )
        claimed.append((event_id, endpoint))
    return _deliveries(conn, claimed)


def _deliveries(conn: Connection, keys: Sequence[tuple[int, str]]) -> list[WebhookDelivery]:
    if not keys:
        return []
    wanted = set(keys)
    query = (
        select(*EVENT_COLUMNS, *(c.label(f"d_{c.name}") for c in WEBHOOK_DELIVERIES.c))
        .select_from(event_rows().join(WEBHOOK_DELIVERIES, _D.event_id == _E.id))
        .where(_E.id.in_([event_id for event_id, _ in keys]))
        .order_by(_E.id)
    )
    return [
        _delivery(row) for row in conn.execute(query) if (row.d_event_id, row.d_endpoint) in wanted
    ]


def _delivery(row: Any) -> WebhookDelivery:
    return WebhookDelivery(
        event=to_live_event(row),
        endpoint=row.d_endpoint,
        type=row.d_type,
        attempts=row.d_attempts,
        created_at=row.d_created_at,
        state=row.d_state,
        last_error=row.d_last_error,
    )


def _set(conn: Connection, /, delivery: WebhookDelivery, **values: Any) -> None:
    conn.execute(
        update(WEBHOOK_DELIVERIES)
        .where(_D.event_id == delivery.event.id, _D.endpoint == delivery.endpoint)
        .values(**values)
    )


def _failed(conn: Connection, limit: int) -> list[WebhookDelivery]:
    keys = conn.execute(
        select(_D.event_id, _D.endpoint)
        .where(_D.state == FAILED)
        .order_by(_D.event_id.desc())
        .limit(limit)
    ).all()
    return list(reversed(_deliveries(conn, [(k.event_id, k.endpoint) for k in keys])))


def _redeliver(conn: Connection, event_id: int, endpoint: str | None, now: datetime) -> int:
    where = [_D.event_id == event_id, _D.state == FAILED]
    if endpoint is not None:
        where.append(_D.endpoint == endpoint)
    result = conn.execute(
        update(WEBHOOK_DELIVERIES)
        .where(*where)
        .values(state=PENDING, attempts=0, next_attempt_at=now, created_at=now, last_error=None)
    )
    return int(result.rowcount)


def _stats(conn: Connection) -> tuple[int, datetime | None]:
    count, oldest = conn.execute(
        select(func.count(), func.min(_D.created_at)).where(_D.state == PENDING)
    ).one()
    return int(count), None if oldest is None else aggregated_utc(oldest)
