"""Conversations: their life cycle (create, read, list, close, escalate). Running a turn in
one is parley.domain.chat.

``scope`` is the owner whose conversations alone the caller sees (a client key's name,
parley.domain.keys); None sees every one. Another owner's conversation is not found, so
its id cannot be probed."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from parley.domain.bounds import check_metadata
from parley.domain.errors import (
    ConversationClosedError,
    ConversationEscalatedError,
    ConversationNotFoundError,
    ConversationOpenError,
)
from parley.domain.events import ConversationEvents, DeletionReason
from parley.domain.goals import GoalService
from parley.domain.models import (
    Conversation,
    ConversationStatus,
    EscalationReason,
    HandoffState,
    HandoffStep,
    Outcome,
    OutcomeSource,
    Page,
)
from parley.domain.outcomes import GoalResults, closing_for
from parley.domain.ports import ConversationStore

# Idle conversations ended per goal in one sweep; the rest at the next.
IDLE_BATCH = 200
# Expired conversations deleted in one transaction (each with its messages).
DELETE_BATCH = 100


class ConversationService:
    def __init__(
        self, conversations: ConversationStore, goals: GoalService, events: ConversationEvents
    ) -> None:
        self._conversations = conversations
        self._goals = goals
        self._events = events

    async def create(
        self, goal_id: str, metadata: dict[str, Any], owner: str | None = None
    ) -> Conversation:
        check_metadata(metadata)
        await self._goals.get(goal_id)
        conversation = await self._conversations.create(goal_id, metadata, owner)
        self._events.conversation_created(conversation)
        return conversation

    async def get(
        self,
        conversation_id: uuid.UUID,
        *,
        with_messages: bool = False,
        messages_limit: int | None = None,
        messages_before: int | None = None,
        scope: str | None = None,
    ) -> Conversation:
        conversation = await self._conversations.get(
            conversation_id,
            with_messages=with_messages,
            messages_limit=messages_limit,
            messages_before=messages_before,
        )
        if conversation is None or scope not in (None, conversation.owner):
            raise ConversationNotFoundError(conversation_id)
        return conversation

    async def page(
        self,
        *,
        goal_id: str | None,
        status: ConversationStatus | None,
        limit: int,
        cursor: str | None,
        scope: str | None = None,
    ) -> Page:
        return await self._conversations.page(
            goal_id=goal_id, status=status, limit=limit, cursor=cursor, owner=scope
        )

    async def close(
        self,
        conversation_id: uuid.UUID,
        scope: str | None = None,
        outcome: Outcome | None = None,
    ) -> Conversation:
        """End it, with the outcome the client reports (none: unknown, or abandoned if it
        waited for an agent; its goal's judge may grade it). Once ended, it stays so:
        closing it again is a conflict that changes nothing."""
        conversation = await self.get(conversation_id, scope=scope)
        goal = await self._goals.get(conversation.goal_id)
        closing = closing_for(goal, conversation_id, OutcomeSource.CLIENT, outcome)
        for previous in (ConversationStatus.ACTIVE, ConversationStatus.ESCALATED):
            closed = await self._conversations.transition(
                conversation_id,
                allowed_from=[previous],
                to=ConversationStatus.COMPLETED,
                closing=closing,
            )
            if closed is not None:
                self._ended(closed, previous)
                return closed
        raise ConversationClosedError("conversation has already ended")

    async def delete(self, conversation_id: uuid.UUID, scope: str | None = None) -> None:
        """Delete an ended conversation and everything it holds (a privacy request): its
        counted outcome stays counted."""
        conversation = await self.get(conversation_id, scope=scope)
        if conversation.status is not ConversationStatus.COMPLETED:
            raise ConversationOpenError()
        if await self._conversations.delete(conversation_id):
            self._events.conversations_deleted(1, DeletionReason.REQUEST)
        else:  # deleted meanwhile (another request, the retention sweep)
            raise ConversationNotFoundError(conversation_id)

    async def delete_expired(self, now: datetime, days: int, batch: int = DELETE_BATCH) -> int:
        """Deletes one batch of the conversations that ended over ``days`` ago; how many
        (fewer than ``batch``: none left)."""
        deleted = await self._conversations.delete_ended_before(now - timedelta(days=days), batch)
        if deleted:
            self._events.conversations_deleted(deleted, DeletionReason.RETENTION)
        return deleted

    async def results(self, goal_id: str, since: datetime) -> GoalResults:
        await self._goals.get(goal_id)
        return await self._conversations.results(goal_id, since)

    async def end_idle(self, now: datetime, limit: int = IDLE_BATCH) -> int:
        """Ends every open conversation idle past its goal's timeout (a customer who left;
        one waiting for an agent is abandoned); how many. Each is ended once, whichever
        replica sweeps: the update holds only while nothing has happened in it."""
        ended = 0
        for goal in await self._goals.all():
            cutoff = now - timedelta(seconds=goal.idle_timeout_seconds)
            for conversation_id, previous in await self._conversations.idle(goal.id, cutoff, limit):
                closed = await self._conversations.transition(
                    conversation_id,
                    allowed_from=[previous],
                    to=ConversationStatus.COMPLETED,
                    idle_before=cutoff,
                    # The customer left: abandoned, unless the judge finds otherwise.
                    closing=closing_for(
                        goal, conversation_id, OutcomeSource.TIMEOUT, Outcome.ABANDONED
                    ),
                )
                if closed is not None:
                    self._ended(closed, previous)
                    ended += 1
        return ended

    def _ended(self, closed: Conversation, previous: ConversationStatus) -> None:
        self._events.conversation_closed(closed, previous)
        abandoned = closed.handoff is not None and closed.handoff.state is HandoffState.ABANDONED
        if abandoned and previous is ConversationStatus.ESCALATED:  # just now
            self._events.handoff_changed(closed, HandoffStep.ABANDONED)

    async def escalate(
        self,
        conversation_id: uuid.UUID,
        reason: EscalationReason,
        note: str | None = None,
        scope: str | None = None,
    ) -> Conversation:
        if scope is not None:
            await self.get(conversation_id, scope=scope)
        escalated = await self._conversations.transition(
            conversation_id,
            allowed_from=[ConversationStatus.ACTIVE],
            to=ConversationStatus.ESCALATED,
            reason=reason,
            note=note,
        )
        if escalated is None:
            raise_for_status(await self.get(conversation_id))
            raise AssertionError("unreachable: an active conversation escalates")
        self._events.conversation_escalated(escalated, reason)
        return escalated


def raise_for_status(conversation: Conversation) -> None:
    """The conflict a conversation that is no longer active answers with."""
    if conversation.status is ConversationStatus.ESCALATED:
        raise ConversationEscalatedError()
    if conversation.status is ConversationStatus.COMPLETED:
        raise ConversationClosedError()
