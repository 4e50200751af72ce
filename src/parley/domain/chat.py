"""Running a turn: the user's message stored, the LLM asked, the reply stored, all told as
one event stream (parley.domain.turns) that each channel encodes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

from parley import defaults
from parley.domain.bounds import check_content
from parley.domain.conversations import raise_for_status
from parley.domain.errors import (
    ContentTooLargeError,
    DatabaseUnavailableError,
    ReplyFailedError,
    TooManyTokensError,
)
from parley.domain.escalation import reason_before_reply
from parley.domain.events import ConversationEvents
from parley.domain.keys import DEVELOPMENT, KeyService, Principal, to_nanos
from parley.domain.models import EscalationReason, Goal, MessageStatus
from parley.domain.ports import LLM, ConversationStore, OpenedTurn, RateLimiter, ReplyDraft
from parley.domain.recent_checks import RecentChecks
from parley.domain.turns import (
    Abandoned,
    Accepted,
    Done,
    Emit,
    Escalated,
    Failed,
    HeldForAgent,
    InFlightTurns,
    RunningTurn,
    Token,
    TurnTimings,
)
from parley.llm import ChatMessage, ChatRequest, LLMError, Role, Usage
from parley.llm.tokens import estimate_usage

# How often a retry waiting on a turn answered on another replica reads the store again.
ANSWER_POLL_SECONDS = 0.1

# The rate limiter's name for the LLM tokens a key used (its tpm).
TOKENS = "tokens"

# What a reply cost in dollars: (model, usage) -> USD, None when unknown or free.
Pricing = Callable[[str, Usage | None], float | None]


def free(model: str, usage: Usage | None) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ChatLimits:
    max_message_chars: int = defaults.MAX_MESSAGE_CHARS
    history_messages: int = defaults.HISTORY_MESSAGES
    max_reply_tokens: int = defaults.MAX_REPLY_TOKENS
    default_model: str = defaults.DEFAULT_MODEL


class ChatService:
    def __init__(
        self,
        conversations: ConversationStore,
        llm: LLM,
        events: ConversationEvents,
        limits: ChatLimits | None = None,
        in_flight: InFlightTurns | None = None,
        *,
        pricing: Pricing = free,
        budgets: KeyService | None = None,
        rate_limiter: RateLimiter | None = None,
        tokens_checked: RecentChecks | None = None,
    ) -> None:
        self._conversations = conversations
        self._llm = llm
        self._events = events
        self._limits = limits or ChatLimits()
        self._pricing = pricing
        self._budgets = budgets
        self._rate_limiter = rate_limiter
        # Keys found within their tokens a minute lately (by name and limit: a changed
        # limit is asked about at once).
        self._tokens_checked = RecentChecks() if tokens_checked is None else tokens_checked
        self.in_flight = in_flight or InFlightTurns()
        # Keyed turns asking the LLM now, so that a retry of one waits for its reply
        # instead of asking again (bounded by the turns in flight).
        self._keyed: dict[tuple[uuid.UUID, str], RunningTurn] = {}

    async def start_turn(
        self,
        conversation_id: uuid.UUID,
        content: str,
        *,
        streaming: bool,
        idempotency_key: str | None = None,
        caller: Principal = DEVELOPMENT,
    ) -> RunningTurn:
        """Store the user's message and start answering it; the events tell the rest.

        The message is stored, in the same transaction as the status check and the
        escalation policy, before any LLM call, so it survives whatever happens next.
        Errors before that (unknown conversation, escalated, too long, the caller's budget
        spent: checked in that transaction) are raised here. The reply's cost is charged
        to the caller.
        """
        if len(content) > self._limits.max_message_chars:
            raise ContentTooLargeError(len(content), self._limits.max_message_chars)
        check_content(content)
        spend_cap = None if self._budgets is None else self._budgets.spend_cap(caller)
        await self._check_tokens(caller)
        while True:
            timings = TurnTimings()
            async with self.in_flight.admission():
                opened = await timings.measure(
                    "db",
                    self._conversations.open_turn(
                        conversation_id,
                        content,
                        escalate_when=lambda goal, conversation: reason_before_reply(
                            goal.escalation, content, conversation
                        ),
                        history_limit=self._limits.history_messages,
                        idempotency_key=idempotency_key,
                        owner=caller.owner_scope,
                        spend_cap=spend_cap,
                    ),
                )
                original = (
                    self._keyed.get((conversation_id, idempotency_key))
                    if opened.repeated and idempotency_key is not None
                    else None
                )
                # Answered on another replica (its lease says so until it ends): wait for
                # that reply rather than ask the LLM a second time.
                elsewhere = (
                    opened.repeated
                    and original is None
                    and opened.reply is None
                    and opened.escalation is None
                    and opened.answering_until is not None
                )
                if not elsewhere and (original is None or original.done):
                    return self._start(opened, timings, streaming, idempotency_key, caller)
            # Outside the admission, so a drain is not held up by the wait.
            if original is not None:
                await original.wait()  # its reply, then told from the store: one LLM call
            else:
                await asyncio.sleep(ANSWER_POLL_SECONDS)  # then read the store again

    def _start(
        self,
        opened: OpenedTurn,
        timings: TurnTimings,
        streaming: bool,
        key: str | None,
        caller: Principal,
    ) -> RunningTurn:
        if opened.held:  # a human agent has the conversation: the message waits for them

            async def hold(emit: Emit, turn: RunningTurn) -> None:
                emit(Accepted(opened.conversation, opened.question))
                emit(HeldForAgent(opened.conversation))

            return self.in_flight.start(hold, timings)
        if opened.repeated:
            _check_still_answerable(opened)
        elif opened.escalation is not None:
            self._events.conversation_escalated(opened.conversation, opened.escalation)

        async def play(emit: Emit, turn: RunningTurn) -> None:
            await self._play(opened, emit, turn, streaming=streaming, caller=caller)

        turn = self.in_flight.start(play, timings)
        if key is not None and opened.reply is None and opened.escalation is None:
            self._keep_while_running((opened.conversation.id, key), turn)
        return turn

    def _keep_while_running(self, keyed: tuple[uuid.UUID, str], turn: RunningTurn) -> None:
        self._keyed[keyed] = turn

        def forget() -> None:
            if self._keyed.get(keyed) is turn:
                del self._keyed[keyed]

        turn.when_done(forget)

    async def _play(
        self,
        opened: OpenedTurn,
        emit: Emit,
        turn: RunningTurn,
        *,
        streaming: bool,
        caller: Principal,
    ) -> None:
        emit(Accepted(opened.conversation, opened.question))
        try:
            await self._answer(opened, emit, turn, streaming=streaming, caller=caller)
        except DatabaseUnavailableError as unavailable:  # the user message is stored
            emit(Failed(unavailable.after_message_stored()))

    async def _answer(
        self,
        opened: OpenedTurn,
        emit: Emit,
        turn: RunningTurn,
        *,
        streaming: bool,
        caller: Principal,
    ) -> None:
        if opened.reply is not None:  # a repeated turn: tell it again, store nothing
            if streaming:
                emit(Token(opened.reply.content))
            emit(Done(opened.conversation, opened.reply))
            return
        if opened.escalation is not None:
            emit(Escalated(opened.conversation, opened.escalation))
            return
        request = self._chat_request(opened.goal, opened.history, opened.conversation.id)
        parts: list[str] = []
        usage: list[Usage] = []
        timings = turn.timings
        try:
            async with self._lease_kept(opened):
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
                cut = usage[-1] if usage else estimate_usage(request, len(parts))
                draft = self._draft(request, parts, cut, caller, MessageStatus.INTERRUPTED)
                await self._conversations.store_reply(opened.question, draft)
                await self._charge_tokens(caller, cut)
            else:  # nothing to keep: a retry may ask again at once
                await self._release(opened)
            if abandoned.error is not None:
                emit(Failed(abandoned.error))
            return
        used = usage[-1] if usage else None
        reply, after = await timings.measure(
            "db",
            self._conversations.store_reply(
                opened.question, self._draft(request, parts, used, caller)
            ),
        )
        emit(Done(after, reply))
        # Counted once the reply is out (its tokens were used either way), so that with
        # Redis the round trip is not the caller's wait. The turn is in flight until it is
        # counted (shutdown waits for it); a next message sent meanwhile is one of the
        # turns in flight the tokens limit's overshoot is bounded by.
        await self._charge_tokens(caller, used)

    async def _read_stream(
        self, request: ChatRequest, parts: list[str], usage: list[Usage], emit: Emit
    ) -> None:
        async for chunk in self._llm.stream(request):
            if chunk.usage is not None:
                usage.append(chunk.usage)
            if chunk.content:
                parts.append(chunk.content)
                emit(Token(chunk.content))

    def _draft(
        self,
        request: ChatRequest,
        parts: list[str],
        usage: Usage | None,
        caller: Principal,
        status: MessageStatus = MessageStatus.COMPLETE,
    ) -> ReplyDraft:
        """A reply to store, with what it cost (a cut one: what was produced before)."""
        cost = self._pricing(request.model, usage)
        return ReplyDraft(
            "".join(parts),
            request.model,
            usage,
            status,
            cost_nanos=to_nanos(cost) if cost else 0,
            payer=caller.name,
        )

    def _tokens_limit(self, caller: Principal) -> tuple[RateLimiter, str, int] | None:
        """Where the caller's tokens a minute are counted, under which name and limit;
        None when it has no such limit."""
        tpm, name, limiter = caller.limits.tpm, caller.name, self._rate_limiter
        if tpm is None or name is None or limiter is None:
            return None
        return limiter, name, tpm

    async def _check_tokens(self, caller: Principal) -> None:
        """Refuse a key that used its LLM tokens a minute (counted after each reply: the
        turns under way finish, so the overshoot is bounded by them). A key found within
        it is not asked about again for a second, unless a reply's charge goes over
        (with Redis, a round trip saved on each of a busy key's turns)."""
        if (limit := self._tokens_limit(caller)) is None:
            return
        limiter, name, tpm = limit
        if self._tokens_checked.fresh(checked := f"{name}:{tpm}"):
            return
        if wait := await limiter.wait(TOKENS, name, tpm):
            raise TooManyTokensError(tpm, wait)
        self._tokens_checked.remember(checked)

    async def _charge_tokens(self, caller: Principal, usage: Usage | None) -> None:
        if (limit := self._tokens_limit(caller)) is None or usage is None:
            return
        limiter, name, tpm = limit
        if not await limiter.charge(TOKENS, name, tpm, usage.total_tokens):
            self._tokens_checked.forget(f"{name}:{tpm}")

    def _chat_request(
        self, goal: Goal, history: tuple[ChatMessage, ...], conversation_id: uuid.UUID
    ) -> ChatRequest:
        return ChatRequest(
            model=goal.model or self._limits.default_model,
            messages=(ChatMessage(Role.SYSTEM, goal.instructions), *history),
            max_tokens=self._limits.max_reply_tokens,
            conversation_id=str(conversation_id),
        )

    @asynccontextmanager
    async def _lease_kept(self, opened: OpenedTurn) -> AsyncIterator[None]:
        """Renew a keyed turn's answer lease every third of it while the LLM answers: it
        lapses only if this process dies, and then holds retries up one lease at most."""
        if opened.answering_until is None:
            yield
            return
        lease = opened.answering_until - opened.question.created_at
        period = lease.total_seconds() / 3

        async def renew() -> None:
            while True:
                await asyncio.sleep(period)
                # If it lapses, a retry asks the LLM again: nothing is lost.
                with suppress(DatabaseUnavailableError):
                    await self._conversations.renew_answer(opened.question)

        renewing = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewing.cancel()

    async def _release(self, opened: OpenedTurn) -> None:
        """End a keyed turn's answer lease when it ends with no reply stored."""
        if opened.answering_until is not None:
            await self._conversations.release_answer(opened.question)

    async def _reply_failed(self, opened: OpenedTurn, error: LLMError, emit: Emit) -> None:
        await self._release(opened)
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
        raise_for_status(repeated.conversation)
