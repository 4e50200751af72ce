"""The LLM judge: grades an ended conversation's transcript against its goal's success
criteria, off the request path. Ended conversations wait in the store's evaluations queue
(written with their end, so a restart loses none); each replica takes a few at a time by
a lease, asks the LLM through the gateway (operation ``judge``), and stores the verdict as
the conversation's outcome. A malformed answer or a timeout is retried with backoff up to
``max_attempts``; a provider that is down is retried (backoff capped) for a day, so an
outage drains afterwards; given up, the conversation keeps the outcome its end gave."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from parley import defaults
from parley.domain.events import ConversationEvents
from parley.domain.goals import GoalService
from parley.domain.models import Conversation, Goal, JudgeJob, Outcome, Verdict
from parley.domain.ports import LLM, ConversationStore, EvaluationStore
from parley.llm.errors import LLMError, LLMErrorKind
from parley.llm.types import ChatMessage, ChatRequest, Operation, Role

# The transcript the judge reads: the latest messages, each cut to a length, so a long
# conversation costs a bounded prompt.
TRANSCRIPT_MESSAGES = 40
TRANSCRIPT_MESSAGE_CHARS = 2000
VERDICT_MAX_TOKENS = 300
# A provider that is down is retried this long after the end, its waits capped.
RETRY_WINDOW = timedelta(hours=24)
MAX_BACKOFF_SECONDS = 300.0
# Errors that say the provider is away, not that this transcript cannot be graded.
_PROVIDER_AWAY = {
    LLMErrorKind.CONNECTION,
    LLMErrorKind.SERVER_ERROR,
    LLMErrorKind.RATE_LIMITED,
    LLMErrorKind.AUTH,
}
# How a transcript names who spoke (the simulated provider reads "customer:" lines).
SPEAKERS = {Role.USER: "customer", Role.ASSISTANT: "assistant", Role.AGENT: "agent"}

INSTRUCTIONS = """You grade whether a customer conversation met its goal.
Read the goal's success criteria and the transcript, then answer with one JSON object and
nothing else: {"label": "achieved" or "not_achieved", "score": a number from 0 to 1 (how
well the criteria were met), "explanation": one or two sentences}."""

_log = structlog.get_logger("parley.judge")


class MalformedVerdictError(ValueError):
    """The judge's answer is not the structured verdict it was asked for."""


def judge_request(goal: Goal, conversation: Conversation, model: str) -> ChatRequest:
    brief = f"{INSTRUCTIONS}\n\nThe goal: {goal.name}\nSuccess criteria: {goal.success_criteria}"
    lines = [
        f"{SPEAKERS.get(m.role, m.role.value)}: {m.content[:TRANSCRIPT_MESSAGE_CHARS]}"
        for m in conversation.messages
    ]
    return ChatRequest(
        model=model,
        messages=(
            ChatMessage(Role.SYSTEM, brief),
            ChatMessage(Role.USER, "Transcript:\n" + "\n".join(lines)),
        ),
        max_tokens=VERDICT_MAX_TOKENS,
        operation=Operation.JUDGE,
        json_output=True,
        conversation_id=str(conversation.id),
    )


def parse_verdict(text: str) -> Verdict:
    try:
        answer = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedVerdictError("the verdict is not JSON") from exc
    if not isinstance(answer, dict):
        raise MalformedVerdictError("the verdict is not a JSON object")
    label, score, explanation = answer.get("label"), answer.get("score"), answer.get("explanation")
    if label not in (Outcome.ACHIEVED.value, Outcome.NOT_ACHIEVED.value):
        raise MalformedVerdictError("the verdict's label is not achieved or not_achieved")
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise MalformedVerdictError("the verdict's score is not a number from 0 to 1")
    if not isinstance(explanation, str):
        raise MalformedVerdictError("the verdict has no explanation")
    return Verdict(Outcome(label), float(score), explanation[:2000])


@dataclass(frozen=True, slots=True)
class JudgeSettings:
    """How the judge works its queue (PARLEY_JUDGE_*)."""

    model: str
    concurrency: int = defaults.JUDGE_CONCURRENCY
    max_attempts: int = defaults.JUDGE_MAX_ATTEMPTS
    backoff_seconds: float = defaults.JUDGE_BACKOFF_SECONDS
    lease_seconds: float = 120.0  # past the gateway's timeout and retries


class JudgeService:
    def __init__(
        self,
        evaluations: EvaluationStore,
        conversations: ConversationStore,
        goals: GoalService,
        llm: LLM,
        events: ConversationEvents,
        settings: JudgeSettings,
        *,
        on_attempt: Callable[[float], None] = lambda seconds: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._evaluations = evaluations
        self._conversations = conversations
        self._goals = goals
        self._llm = llm
        self._events = events
        self.settings = settings
        self.on_attempt = on_attempt  # told each attempt's seconds (the metrics)
        self._clock = clock

    async def run_once(self) -> int:
        """Grades the due ones this replica can take now (at most ``concurrency``, at
        once); how many it took."""
        settings = self.settings
        jobs = await self._evaluations.claim(
            self._clock(), settings.lease_seconds, settings.concurrency
        )
        await asyncio.gather(*(self._grade(job) for job in jobs))
        return len(jobs)

    async def _grade(self, job: JudgeJob) -> None:
        log = _log.bind(conversation_id=str(job.conversation_id), goal_id=job.goal_id)
        conversation = await self._conversations.get(
            job.conversation_id, with_messages=True, messages_limit=TRANSCRIPT_MESSAGES
        )
        if conversation is None:
            return  # deleted meanwhile: its evaluation went with it
        goal = await self._goals.get(job.goal_id)
        started = time.perf_counter()
        try:
            completion = await self._llm.complete(
                judge_request(goal, conversation, self.settings.model)
            )
            verdict = parse_verdict(completion.content)
        except (LLMError, MalformedVerdictError) as error:
            self.on_attempt(time.perf_counter() - started)
            await self._failed(job, error, log)
            return
        self.on_attempt(time.perf_counter() - started)
        judged = await self._evaluations.judged(
            job.conversation_id, verdict, completion.model, self._clock()
        )
        if judged is not None:
            self._events.conversation_judged(judged)

    async def _failed(
        self, job: JudgeJob, error: Exception, log: structlog.stdlib.BoundLogger
    ) -> None:
        reason = _reason(error)
        now = self._clock()
        away = isinstance(error, LLMError) and error.kind in _PROVIDER_AWAY
        spent = job.attempts >= self.settings.max_attempts and not away
        if spent or now - job.created_at > RETRY_WINDOW:
            log.warning("judge_gave_up", attempts=job.attempts, reason=reason)
            given_up = await self._evaluations.give_up(job.conversation_id, reason, now)
            if given_up is not None:
                self._events.conversation_judged(given_up)
            return
        wait = min(self.settings.backoff_seconds * 2 ** (job.attempts - 1), MAX_BACKOFF_SECONDS)
        wait *= random.uniform(0.5, 1.0)
        log.info("judge_retrying", attempts=job.attempts, reason=reason, wait_seconds=wait)
        await self._evaluations.retry(job.conversation_id, now + timedelta(seconds=wait), reason)


def _reason(error: Exception) -> str:
    """What went wrong, in a fixed vocabulary plus the error's own short message (never a
    transcript or a secret: ours, or the provider error's mapped message)."""
    if isinstance(error, LLMError):
        return f"llm_{error.kind.value}"
    return f"malformed_verdict: {error}"
