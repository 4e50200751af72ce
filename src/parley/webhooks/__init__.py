"""Webhooks: the handoff's events, signed per the Standard Webhooks specification and
delivered at least once from the transactional outbox (the event log), by one replica at
a time, retried with backoff for a day, then kept as failed for ``parley webhooks``.

``parley.webhooks.types`` says which events are sent (light: the metrics import it);
``parley.webhooks.dispatcher`` sends them."""

from parley.webhooks.types import WEBHOOK_TYPES, webhook_type

__all__ = ["WEBHOOK_TYPES", "webhook_type"]
