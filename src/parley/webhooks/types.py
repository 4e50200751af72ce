"""Which events a webhook endpoint receives, under which type."""

from __future__ import annotations

from parley.domain.models import HandoffStep, LiveEvent, LiveEventKind
from parley.llm.types import Role

WEBHOOK_TYPES = (
    "conversation.escalated",
    "handoff.assigned",
    "handoff.message",
    "handoff.resolved",
    "conversation.abandoned",
)
_STEPS = {
    HandoffStep.ESCALATED: "conversation.escalated",
    HandoffStep.ASSIGNED: "handoff.assigned",
    HandoffStep.TRANSFERRED: "handoff.assigned",  # to another agent
    HandoffStep.RETURNED_TO_BOT: "handoff.resolved",
    HandoffStep.COMPLETED: "handoff.resolved",
    HandoffStep.ENDED: "handoff.resolved",  # the customer closed it while an agent held it
    HandoffStep.ABANDONED: "conversation.abandoned",
}


def webhook_type(event: LiveEvent) -> str | None:
    """The webhook type an event is sent as; None: not sent (a hand-back to the queue, an
    agent's own message)."""
    if event.kind is LiveEventKind.MESSAGE:
        customer = event.message is not None and event.message.role is Role.USER
        return "handoff.message" if customer else None
    return _STEPS.get(event.step) if event.step is not None else None
