"""Conversations: their life cycle, and one turn of user message and assistant reply."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from parley.domain.errors import (
    ContentTooLargeError,
    ConversationClosedError,
    ConversationEscalatedError,
    ConversationNotFoundError,
    ReplyFailedError,
)
from parley.domain.escalation import reason_before_reply
from parley.domain.events import ConversationEvents
from parley.domain.goals import GoalService
from parley.domain.models import (
    Conversation,
    ConversationStatus,
    EscalationReason,
    Goal,
    Message,
    Page,
)
from parley.llm import ChatMessage, ChatRequest, LLMError, LLMGateway, Role, Usage
from parley.store import Store


@dataclass(frozen=True, slots=True)
class ChatLimits:
    max_message_chars: int = 8000
    history_messages: int = 40
    max_reply_tokens: int = 512
    default_model: str = "llama-3.1-8b-instant"


@dataclass(frozen=True, slots=True)
class PendingTurn:
    """A stored user message, and either the request to answer it or why it was escalated."""

    conversation: Conversation
    user_message: Message
    request: ChatRequest | None
    escalated: Conversation | None = None
    escalation_reason: EscalationReason | None = None


@dataclass(frozen=True, slots=True)
class Turn:
    conversation: Conversation
    user_message: Message
    reply: Message | None
    escalation_reason: EscalationReason | None = None


@dataclass(frozen=True, slots=True)
class ReplyToken:
    content: str


@dataclass(frozen=True, slots=True)
class ReplyDone:
    message: Message


class ConversationService:
    def __init__(
        self,
        store: Store,
        goals: GoalService,
        gateway: LLMGateway,
        events: ConversationEvents,
        limits: ChatLimits | None = None,
    ) -> None:
        self._conversations = store.conversations
        self._goals = goals
        self._gateway = gateway
        self._events = events
        self._limits = limits or ChatLimits()

    # -- life cycle ---------------------------------------------------------------------

    async def create(self, goal_id: str, metadata: dict[str, Any]) -> Conversation:
        await self._goals.get(goal_id)
        conversation = await self._conversations.create(goal_id, metadata)
        self._events.conversation_created(conversation)
        return conversation

    async def get(self, conversation_id: uuid.UUID, *, with_messages: bool = False) -> Conversation:
        conversation = await self._conversations.get(conversation_id, with_messages=with_messages)
        if conversation is None:
            raise ConversationNotFoundError(conversation_id)
        return conversation

    async def page(
        self,
        *,
        goal_id: str | None,
        status: ConversationStatus | None,
        limit: int,
        cursor: str | None,
    ) -> Page:
        return await self._conversations.page(
            goal_id=goal_id, status=status, limit=limit, cursor=cursor
        )

    async def close(self, conversation_id: uuid.UUID) -> Conversation:
        """Mark completed. Closing a completed conversation changes nothing."""
        for previous in (ConversationStatus.ACTIVE, ConversationStatus.ESCALATED):
            closed = await self._conversations.transition(
                conversation_id, allowed_from=[previous], to=ConversationStatus.COMPLETED
            )
            if closed is not None:
                self._events.conversation_closed(closed, previous)
                return closed
        return await self.get(conversation_id)

    async def escalate(
        self, conversation_id: uuid.UUID, reason: EscalationReason, note: str | None = None
    ) -> Conversation:
        escalated = await self._escalate(conversation_id, reason, note)
        if escalated is None:
            _raise_for_status(await self.get(conversation_id))
            raise AssertionError("unreachable: an active conversation escalates")
        return escalated

    async def _escalate(
        self, conversation_id: uuid.UUID, reason: EscalationReason, note: str | None = None
    ) -> Conversation | None:
        escalated = await self._conversations.transition(
            conversation_id,
            allowed_from=[ConversationStatus.ACTIVE],
            to=ConversationStatus.ESCALATED,
            reason=reason,
            note=note,
        )
        if escalated is not None:
            self._events.conversation_escalated(escalated, reason)
        return escalated

    # -- a turn -------------------------------------------------------------------------

    async def begin_turn(self, conversation_id: uuid.UUID, content: str) -> PendingTurn:
        """Validate and store the user's message, then apply the escalation policy.

        The message is stored before any LLM call, so it survives whatever happens next.
        """
        if len(content) > self._limits.max_message_chars:
            raise ContentTooLargeError(len(content), self._limits.max_message_chars)
        conversation = await self.get(conversation_id)
        _raise_for_status(conversation)
        goal = await self._goals.get(conversation.goal_id)
        user_message, turns = await self._conversations.append_message(
            conversation_id, Role.USER, content
        )
        conversation = dataclasses.replace(
            conversation, turns=turns, updated_at=user_message.created_at
        )
        reason = reason_before_reply(goal.escalation, content, turns)
        if reason is not None:
            escalated = await self._escalate(conversation_id, reason)
            return PendingTurn(conversation, user_message, None, escalated, reason)
        return PendingTurn(conversation, user_message, await self._chat_request(goal, conversation))

    async def reply(self, pending: PendingTurn) -> Turn:
        """Answer a pending turn in one piece."""
        if pending.request is None:
            return self._escalated_turn(pending)
        try:
            completion = await self._gateway.complete(pending.request)
        except LLMError as error:
            raise await self._reply_failed(pending, error) from error
        reply = await self._store_reply(pending, completion.content, completion.usage)
        return Turn(pending.conversation, pending.user_message, reply)

    async def stream_reply(
        self, pending: PendingTurn
    ) -> AsyncGenerator[ReplyToken | ReplyDone, None]:
        """Answer a pending turn token by token; the last item is the stored reply.

        A reply cut off midway is not stored: the conversation keeps only whole turns.
        """
        assert pending.request is not None, "an escalated turn has no reply to stream"
        parts: list[str] = []
        usage: Usage | None = None
        try:
            async for chunk in self._gateway.stream(pending.request):
                usage = chunk.usage or usage
                if chunk.content:
                    parts.append(chunk.content)
                    yield ReplyToken(chunk.content)
        except LLMError as error:
            raise await self._reply_failed(pending, error) from error
        yield ReplyDone(await self._store_reply(pending, "".join(parts), usage))

    async def send(self, conversation_id: uuid.UUID, content: str) -> Turn:
        return await self.reply(await self.begin_turn(conversation_id, content))

    def _escalated_turn(self, pending: PendingTurn) -> Turn:
        conversation = pending.escalated or pending.conversation
        return Turn(conversation, pending.user_message, None, pending.escalation_reason)

    async def _chat_request(self, goal: Goal, conversation: Conversation) -> ChatRequest:
        history = await self._conversations.recent_messages(
            conversation.id, self._limits.history_messages
        )
        messages = (
            ChatMessage(Role.SYSTEM, goal.instructions),
            *tuple(ChatMessage(m.role, m.content) for m in history),
        )
        return ChatRequest(
            model=goal.model or self._limits.default_model,
            messages=messages,
            max_tokens=self._limits.max_reply_tokens,
        )

    async def _store_reply(
        self, pending: PendingTurn, content: str, usage: Usage | None
    ) -> Message:
        assert pending.request is not None
        message, _ = await self._conversations.append_message(
            pending.conversation.id,
            Role.ASSISTANT,
            content,
            model=pending.request.model,
            usage=usage,
        )
        return message

    async def _reply_failed(self, pending: PendingTurn, error: LLMError) -> ReplyFailedError:
        goal = await self._goals.get(pending.conversation.goal_id)
        escalated = False
        if goal.escalation.on_llm_failure:
            escalated = (
                await self._escalate(pending.conversation.id, EscalationReason.LLM_FAILURE)
                is not None
            )
        return ReplyFailedError(error.kind.value, error.message, escalated=escalated)


def _raise_for_status(conversation: Conversation) -> None:
    if conversation.status is ConversationStatus.ESCALATED:
        raise ConversationEscalatedError()
    if conversation.status is ConversationStatus.COMPLETED:
        raise ConversationClosedError()
