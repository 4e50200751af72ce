"""Conversations: their life cycle, and one turn of user message and assistant reply."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from parley import defaults
from parley.domain.bounds import check_content, check_metadata
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
    MessageStatus,
    Page,
)
from parley.domain.ports import LLM, ConversationStore, OpenedTurn, ReplyDraft
from parley.domain.turns import (
    Abandoned,
    Accepted,
    Done,
    Emit,
    Escalated,
    Failed,
    InFlightTurns,
    RunningTurn,
    Token,
    TurnTimings,
)
from parley.llm import ChatMessage, ChatRequest, LLMError, Role, Usage
from parley.llm.tokens import estimate_usage


@dataclass(frozen=True, slots=True)
class ChatLimits:
    max_message_chars: int = defaults.MAX_MESSAGE_CHARS
    history_messages: int = defaults.HISTORY_MESSAGES
    max_reply_tokens: int = defaults.MAX_REPLY_TOKENS
    default_model: str = defaults.DEFAULT_MODEL


class ConversationService:
    def __init__(
        self,
        conversations: ConversationStore,
        goals: GoalService,
        llm: LLM,
        events: ConversationEvents,
        limits: ChatLimits | None = None,
        in_flight: InFlightTurns | None = None,
    ) -> None:
        self._conversations = conversations
        self._goals = goals
        self._llm = llm
        self._events = events
        self._limits = limits or ChatLimits()
        self.in_flight = in_flight or InFlightTurns()

    # -- life cycle ---------------------------------------------------------------------

    async def create(self, goal_id: str, metadata: dict[str, Any]) -> Conversation:
        check_metadata(metadata)
        await self._goals.get(goal_id)
        conversation = await self._conversations.create(goal_id, metadata)
        self._events.conversation_created(conversation)
        return conversation

    async def get(
        self,
        conversation_id: uuid.UUID,
        *,
        with_messages: bool = False,
        messages_limit: int | None = None,
        messages_before: int | None = None,
    ) -> Conversation:
        conversation = await self._conversations.get(
            conversation_id,
            with_messages=with_messages,
            messages_limit=messages_limit,
            messages_before=messages_before,
        )
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

    async def start_turn(
        self,
        conversation_id: uuid.UUID,
        content: str,
        *,
        streaming: bool,
        idempotency_key: str | None = None,
    ) -> RunningTurn:
        """Store the user's message and start answering it; the events tell the rest.

        The message is stored, in the same transaction as the status check and the
        escalation policy, before any LLM call, so it survives whatever happens next.
        Errors before that (unknown conversation, escalated, too long) are raised here.
        """
        if len(content) > self._limits.max_message_chars:
            raise ContentTooLargeError(len(content), self._limits.max_message_chars)
        check_content(content)
        timings = TurnTimings()
        async with self.in_flight.admission():
            opened = await timings.measure(
                "db",
                self._conversations.open_turn(
                    conversation_id,
                    content,
                    escalate_when=lambda goal, turns: reason_before_reply(
                        goal.escalation, content, turns
                    ),
                    history_limit=self._limits.history_messages,
                    idempotency_key=idempotency_key,
                ),
            )
            if opened.repeated:
                _check_still_answerable(opened)
            elif opened.escalation is not None:
                self._events.conversation_escalated(opened.conversation, opened.escalation)

            async def play(emit: Emit, turn: RunningTurn) -> None:
                await self._play(opened, emit, turn, streaming=streaming)

            return self.in_flight.start(play, timings)

    async def _play(
        self, opened: OpenedTurn, emit: Emit, turn: RunningTurn, *, streaming: bool
    ) -> None:
        emit(Accepted(opened.conversation, opened.question))
        if opened.reply is not None:  # a repeated turn: tell it again, store nothing
            if streaming:
                emit(Token(opened.reply.content))
            emit(Done(opened.conversation, opened.reply))
            return
        if opened.escalation is not None:
            emit(Escalated(opened.conversation, opened.escalation))
            return
        request = self._chat_request(opened.goal, opened.history)
        parts: list[str] = []
        usage: list[Usage] = []
        timings = turn.timings
        try:
            if streaming:
                await timings.measure(
                    "llm", turn.stoppable(self._read_stream(request, parts, usage, emit))
                )
            else:
                completion = await timings.measure(
                    "llm", turn.stoppable(self._llm.complete(request))
                )
                parts.append(completion.content)
                if completion.usage is not None:
                    usage.append(completion.usage)
        except LLMError as error:
            await self._reply_failed(opened, error, emit)
            return
        except Abandoned as abandoned:
            if parts:
                await self._conversations.store_reply(
                    opened.question,
                    ReplyDraft(
                        "".join(parts),
                        request.model,
                        usage[-1] if usage else estimate_usage(request, len(parts)),
                        MessageStatus.INTERRUPTED,
                    ),
                )
            if abandoned.error is not None:
                emit(Failed(abandoned.error))
            return
        reply, after = await timings.measure(
            "db",
            self._conversations.store_reply(
                opened.question,
                ReplyDraft("".join(parts), request.model, usage[-1] if usage else None),
            ),
        )
        emit(Done(after, reply))

    async def _read_stream(
        self, request: ChatRequest, parts: list[str], usage: list[Usage], emit: Emit
    ) -> None:
        async for chunk in self._llm.stream(request):
            if chunk.usage is not None:
                usage.append(chunk.usage)
            if chunk.content:
                parts.append(chunk.content)
                emit(Token(chunk.content))

    def _chat_request(self, goal: Goal, history: tuple[ChatMessage, ...]) -> ChatRequest:
        return ChatRequest(
            model=goal.model or self._limits.default_model,
            messages=(ChatMessage(Role.SYSTEM, goal.instructions), *history),
            max_tokens=self._limits.max_reply_tokens,
        )

    async def _reply_failed(self, opened: OpenedTurn, error: LLMError, emit: Emit) -> None:
        policy = opened.goal.escalation
        escalated = await self._conversations.record_llm_failure(
            opened.conversation.id,
            escalate_at=policy.max_llm_failures if policy.on_llm_failure else None,
        )
        emit(Failed(ReplyFailedError(error.kind, error.message, escalated=bool(escalated))))
        if escalated is not None:
            self._events.conversation_escalated(escalated, EscalationReason.LLM_FAILURE)
            emit(Escalated(escalated, EscalationReason.LLM_FAILURE))


def _check_still_answerable(repeated: OpenedTurn) -> None:
    """A retry of a turn that has no reply yet is answered now, unless the conversation ended
    meanwhile: then it is refused as any message to it is. A retry of the message that
    escalated the conversation is told that again."""
    if repeated.reply is None and repeated.escalation is None:
        _raise_for_status(repeated.conversation)


def _raise_for_status(conversation: Conversation) -> None:
    if conversation.status is ConversationStatus.ESCALATED:
        raise ConversationEscalatedError()
    if conversation.status is ConversationStatus.COMPLETED:
        raise ConversationClosedError()
