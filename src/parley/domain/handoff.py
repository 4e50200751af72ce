"""The human handoff: an escalated conversation waits in the queue, an agent claims it,
answers it, and resolves it (back to the bot, or completed); the agent may hand it on
or put it back. Each step is one atomic change in the store; when it does not apply, the
conversation as it is says why (not found, not in handoff, held by another)."""

from __future__ import annotations

import uuid

from parley.domain.bounds import check_content
from parley.domain.errors import (
    AlreadyAssignedError,
    ContentTooLargeError,
    ConversationNotFoundError,
    NotAssignedError,
    NotInHandoffError,
)
from parley.domain.events import ConversationEvents
from parley.domain.goals import GoalService
from parley.domain.keys import Principal, Role
from parley.domain.models import (
    Conversation,
    HandoffState,
    HandoffStep,
    Message,
    Outcome,
    OutcomeSource,
    Page,
)
from parley.domain.outcomes import closing_for
from parley.domain.ports import ConversationStore, HandoffStore


class HandoffService:
    def __init__(
        self,
        handoffs: HandoffStore,
        conversations: ConversationStore,
        goals: GoalService,
        events: ConversationEvents,
        max_message_chars: int,
    ) -> None:
        self._handoffs = handoffs
        self._conversations = conversations
        self._goals = goals
        self._events = events
        self._max_message_chars = max_message_chars

    async def queue(
        self,
        *,
        state: HandoffState,
        goal_id: str | None,
        agent: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page:
        return await self._handoffs.queue(
            state=state, goal_id=goal_id, agent=agent, limit=limit, cursor=cursor
        )

    async def assign(
        self, conversation_id: uuid.UUID, caller: Principal, to: str | None = None
    ) -> Conversation:
        """Claim for the caller; with ``to``, hand it to that agent (its holder or an
        admin only). Two claims at once: one wins, the other is already_assigned."""
        agent = to or _agent_name(caller)
        transfer = to is not None
        holder = None if caller.role is Role.ADMIN else caller.name
        changed = await self._handoffs.assign(
            conversation_id, agent, holder=holder, transfer=transfer
        )
        if changed is not None:
            step = HandoffStep.TRANSFERRED if transfer else HandoffStep.ASSIGNED
            self._events.handoff_changed(changed, step)
            return changed
        current = await self._current(conversation_id)
        if transfer:
            raise NotAssignedError()
        raise AlreadyAssignedError(current.handoff.agent if current.handoff else None)

    async def unassign(self, conversation_id: uuid.UUID, caller: Principal) -> Conversation:
        changed = await self._handoffs.unassign(conversation_id, holder=_holder(caller))
        if changed is None:
            await self._current(conversation_id)
            raise NotAssignedError()
        self._events.handoff_changed(changed, HandoffStep.UNASSIGNED)
        return changed

    async def resolve(
        self,
        conversation_id: uuid.UUID,
        caller: Principal,
        *,
        return_to_bot: bool,
        note: str | None = None,
        outcome: Outcome | None = None,
    ) -> Conversation:
        """Back to the bot, or the conversation ends with the outcome the agent reports
        (none: unknown, unless the goal's judge grades it)."""
        closing = None
        if not return_to_bot:
            current = await self._current(conversation_id)
            goal = await self._goals.get(current.goal_id)
            closing = closing_for(goal, conversation_id, OutcomeSource.AGENT, outcome)
        changed = await self._handoffs.resolve(
            conversation_id, holder=_holder(caller), closing=closing, note=note
        )
        if changed is None:
            await self._current(conversation_id)
            raise NotAssignedError()
        step = HandoffStep.RETURNED_TO_BOT if return_to_bot else HandoffStep.COMPLETED
        self._events.handoff_changed(changed, step)
        return changed

    async def agent_message(
        self, conversation_id: uuid.UUID, caller: Principal, content: str
    ) -> tuple[Message, Conversation]:
        if len(content) > self._max_message_chars:
            raise ContentTooLargeError(len(content), self._max_message_chars)
        check_content(content)
        stored = await self._handoffs.agent_message(conversation_id, _agent_name(caller), content)
        if stored is None:
            await self._current(conversation_id)
            raise NotAssignedError()
        message, after = stored
        if after.handoff is not None and after.handoff.first_agent_reply_at == message.created_at:
            self._events.handoff_changed(after, HandoffStep.FIRST_REPLY)
        return stored

    async def _current(self, conversation_id: uuid.UUID) -> Conversation:
        """The conversation, if it is in a handoff at all (else the error that says so)."""
        conversation = await self._conversations.get(conversation_id)
        if conversation is None:
            raise ConversationNotFoundError(conversation_id)
        handoff = conversation.handoff
        if handoff is None or handoff.state not in (HandoffState.WAITING, HandoffState.ASSIGNED):
            raise NotInHandoffError()
        return conversation


def _agent_name(caller: Principal) -> str:
    # Development mode has no key names: everyone is the one local agent.
    return caller.name or "local"


def _holder(caller: Principal) -> str | None:
    """Whose hold a step must match: the caller's own, or (an admin) anyone's."""
    return None if caller.role is Role.ADMIN else _agent_name(caller)
