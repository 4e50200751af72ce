"""Delivers webhook events: on every replica a loop queues new events for each endpoint,
claims due deliveries (a lease; one replica each), signs and POSTs them, and records the
outcome. Its own HTTP client, bounded concurrency and timeouts: a slow or dead receiver
never slows a turn."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from standardwebhooks.webhooks import Webhook

from parley.api.schemas import LiveEventOut
from parley.domain.models import WebhookDelivery
from parley.store.outbox import OutboxRepository
from parley.webhooks.types import webhook_type

logger = structlog.get_logger("parley.webhooks")

# The longest wait between two attempts (the first ones come quicker, doubling).
MAX_BACKOFF_SECONDS = 3600.0
POLL_SECONDS = 0.5
CONCURRENCY = 8

# (type, outcome: delivered|retry|failed, seconds) of each attempt, for the metrics.
AttemptObserver = Callable[[str, str, float], None]


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # stable: the endpoint's cursor and deliveries are kept under it
    url: str
    secret: str  # whsec_...: never logged

    def signer(self) -> Webhook:
        return Webhook(self.secret)


def backoff_seconds(attempts: int, base: float, rng: random.Random) -> float:
    """Exponential, capped, with jitter (half to all of it): receivers coming back are not
    hit by every replica's retries at once."""
    ceiling = min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1))
    return rng.uniform(ceiling / 2, ceiling)


class Dispatcher:
    def __init__(
        self,
        outbox: OutboxRepository,
        endpoints: list[Endpoint],
        *,
        timeout_seconds: float,
        retry_window: timedelta,
        backoff_base_seconds: float,
        on_attempt: AttemptObserver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._outbox = outbox
        self._endpoints = {endpoint.name: endpoint for endpoint in endpoints}
        self._signers = {endpoint.name: endpoint.signer() for endpoint in endpoints}
        self._retry_window = retry_window
        self._backoff_base = backoff_base_seconds
        self._lease = timedelta(seconds=max(30.0, 2 * timeout_seconds + 5))
        self._on_attempt = on_attempt
        self._rng = random.Random()
        self._clock = clock
        self._http = httpx.AsyncClient(
            timeout=timeout_seconds, follow_redirects=False, transport=transport
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="parley-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._http.aclose()

    async def run(self) -> None:
        while True:
            try:
                busy = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database away: try again shortly
                logger.warning("webhook_dispatch_failed", error=type(error).__name__)
                busy = False
            if not busy:
                await asyncio.sleep(POLL_SECONDS)

    async def deliver_due(self) -> bool:
        """One round: queue new events, deliver what is due; whether there was any."""
        now = self._clock()
        await self._outbox.queue_new(list(self._endpoints), webhook_type, now)
        batch = await self._outbox.claim(now, self._lease, CONCURRENCY)
        batch = [d for d in batch if d.endpoint in self._endpoints]  # one removed meanwhile
        await asyncio.gather(*(self._deliver(delivery) for delivery in batch))
        return bool(batch)

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        endpoint = self._endpoints[delivery.endpoint]
        message_id = f"evt_{delivery.event.id}"  # the same on every retry: receivers dedupe
        sent_at = self._clock()
        body = json.dumps(
            {
                "type": delivery.type,
                "timestamp": sent_at.isoformat().replace("+00:00", "Z"),
                "data": LiveEventOut.model_validate(delivery.event).model_dump(mode="json"),
            }
        )
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self._signers[endpoint.name].sign(message_id, sent_at, body),
        }
        began = time.perf_counter()
        error: str | None = None
        try:
            answer = await self._http.post(endpoint.url, content=body, headers=headers)
            if not answer.is_success:
                error = f"HTTP {answer.status_code}"
        except httpx.HTTPError as failed:
            error = type(failed).__name__  # never the URL's query or the body
        elapsed = time.perf_counter() - began
        now = self._clock()
        if error is None:
            await self._outbox.delivered(delivery, now)
            outcome = "delivered"
        elif now - delivery.created_at >= self._retry_window:
            await self._outbox.give_up(delivery, error)
            outcome = "failed"
            logger.warning(
                "webhook_given_up",
                endpoint=endpoint.name,
                event_id=delivery.event.id,
                attempts=delivery.attempts,
                error=error,
            )
        else:
            wait = backoff_seconds(delivery.attempts, self._backoff_base, self._rng)
            await self._outbox.retry(delivery, now + timedelta(seconds=wait), error)
            outcome = "retry"
        if self._on_attempt is not None:
            self._on_attempt(delivery.type, outcome, elapsed)
