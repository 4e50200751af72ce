"""Business events, each emitted from exactly one place in the services.

Listeners (logs now, metrics later) plug in here; the services never import them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from parley.domain.models import Conversation, ConversationStatus, EscalationReason, HandoffStep


class ConversationEvents(Protocol):
    def conversation_created(self, conversation: Conversation) -> None: ...

    def conversation_escalated(
        self, conversation: Conversation, reason: EscalationReason
    ) -> None: ...

    def conversation_closed(
        self, conversation: Conversation, previous: ConversationStatus
    ) -> None: ...

    def handoff_changed(self, conversation: Conversation, step: HandoffStep) -> None: ...


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
        self._log.info(
            "conversation_closed",
            conversation_id=str(conversation.id),
            goal_id=conversation.goal_id,
            previous_status=previous.value,
        )

    def handoff_changed(self, conversation: Conversation, step: HandoffStep) -> None:
        handoff = conversation.handoff
        self._log.info(
            f"handoff_{step.value}",
            conversation_id=str(conversation.id),
            goal_id=conversation.goal_id,
            agent=handoff.agent if handoff else None,
        )
