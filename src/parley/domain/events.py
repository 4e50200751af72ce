"""Business events, each emitted from exactly one place in the services.

Listeners (logs now, metrics later) plug in here; the services never import them.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Protocol

from parley.domain.models import Conversation, ConversationStatus, EscalationReason, HandoffStep


class DeletionReason(StrEnum):
    REQUEST = "request"  # DELETE /v1/conversations/{id}: a privacy request, say
    RETENTION = "retention"  # ended longer ago than PARLEY_RETENTION_DAYS


class ConversationEvents(Protocol):
    def conversation_created(self, conversation: Conversation) -> None: ...

    def conversation_escalated(
        self, conversation: Conversation, reason: EscalationReason
    ) -> None: ...

    def conversation_closed(
        self, conversation: Conversation, previous: ConversationStatus
    ) -> None: ...

    def handoff_changed(self, conversation: Conversation, step: HandoffStep) -> None: ...

    def conversation_judged(self, conversation: Conversation) -> None:
        """The judge's verdict is in (or it gave up): the outcome is final."""
        ...

    def conversations_deleted(self, count: int, reason: DeletionReason) -> None: ...


class EventFanout:
    """Delivers each event to every listener, in order."""

    def __init__(self, listeners: Iterable[ConversationEvents] = ()) -> None:
        self.listeners = list(listeners)

    def add(self, listener: ConversationEvents) -> None:
        self.listeners.append(listener)

    def conversation_created(self, conversation: Conversation) -> None:
        for listener in self.listeners:
            listener.conversation_created(conversation)

    def conversation_escalated(self, conversation: Conversation, reason: EscalationReason) -> None:
        for listener in self.listeners:
            listener.conversation_escalated(conversation, reason)

    def conversation_closed(self, conversation: Conversation, previous: ConversationStatus) -> None:
        for listener in self.listeners:
            listener.conversation_closed(conversation, previous)

    def handoff_changed(self, conversation: Conversation, step: HandoffStep) -> None:
        for listener in self.listeners:
            listener.handoff_changed(conversation, step)

    def conversation_judged(self, conversation: Conversation) -> None:
        for listener in self.listeners:
            listener.conversation_judged(conversation)

    def conversations_deleted(self, count: int, reason: DeletionReason) -> None:
        for listener in self.listeners:
            listener.conversations_deleted(count, reason)


class LoggingEvents:
    """Logs each business event with the ids (ids belong in logs, not in metric labels)."""

    def __init__(self, logger: Any) -> None:
        self._log = logger

    def conversation_created(self, conversation: Conversation) -> None:
        self._log.info(
            "conversation_created",
            conversation_id=str(conversation.id),
            goal_id=conversation.goal_id,
        )

    def conversation_escalated(self, conversation: Conversation, reason: EscalationReason) -> None:
        self._log.info(
            "conversation_escalated",
            conversation_id=str(conversation.id),
            goal_id=conversation.goal_id,
            reason=reason.value,
        )

    def conversation_closed(self, conversation: Conversation, previous: ConversationStatus) -> None:
        ending = conversation.ending
        self._log.info(
            "conversation_closed",
            conversation_id=str(conversation.id),
            goal_id=conversation.goal_id,
            previous_status=previous.value,
            outcome=ending.outcome.value if ending else None,
            outcome_source=ending.source.value if ending and ending.source else None,
            judging=conversation.judging,
        )

    def conversation_judged(self, conversation: Conversation) -> None:
        evaluation, ending = conversation.evaluation, conversation.ending
        self._log.info(
            "conversation_judged",
            conversation_id=str(conversation.id),
            goal_id=conversation.goal_id,
            state=evaluation.state.value if evaluation else None,
            label=evaluation.label.value if evaluation and evaluation.label else None,
            score=evaluation.score if evaluation else None,
            outcome=ending.outcome.value if ending else None,
            error=evaluation.last_error if evaluation else None,
        )

    def conversations_deleted(self, count: int, reason: DeletionReason) -> None:
        self._log.info("conversations_deleted", count=count, reason=reason.value)

    def handoff_changed(self, conversation: Conversation, step: HandoffStep) -> None:
        handoff = conversation.handoff
        self._log.info(
            f"handoff_{step.value}",
            conversation_id=str(conversation.id),
            goal_id=conversation.goal_id,
            agent=handoff.agent if handoff else None,
        )
