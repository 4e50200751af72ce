"""``parley demo``: realistic traffic against a running Parley, so its dashboards fill and
an alert can be made to fire on purpose.

Creates a few goals, then runs N clients for a bounded time (or number of turns), each
mixing whole, SSE and WebSocket turns, now and then a trigger phrase that escalates its
conversation; ``--fail`` asks the simulated LLM to fail that share of turns (it fails a
message that carries its failure marker). A live line shows turns/s, p95 and errors.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TextIO

from parley.client import Escalated, HeldForAgent, ParleyClient, ParleyError, TurnFailed
from parley.llm.simulated import FAIL_MARKER

GOALS = (
    ("Orders", "Help customers with their orders.", ["human", "refund"]),
    ("Onboarding", "Walk new users through setting up their account.", ["agent"]),
    ("Billing", "Answer questions about invoices.", ["lawyer"]),
)
QUESTIONS = (
    "Where is my order?",
    "How do I change my address?",
    "Can I pay by card?",
    "What does this charge mean?",
    "How do I invite a colleague?",
)
KINDS = ("http", "sse", "ws")
# What became of a turn the demo sent: answered, escalated (by a trigger phrase, or the
# LLM failing too often), rejected (its conversation had ended), or failed.
OUTCOMES = ("ok", "escalated", "rejected", "error")


@dataclass
class Progress:
    started: float = field(default_factory=time.monotonic)
    outcomes: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[tuple[str, str]] = field(default_factory=Counter)
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=500))
    conversations_closed: int = 0

    @property
    def turns(self) -> int:
        return sum(self.outcomes.values())

    def count(self, channel: str, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.by_channel[channel, outcome] += 1

    def summary(self) -> str:
        """Turns by channel and outcome, with totals that add up."""
        width = max(len(o) for o in OUTCOMES) + 2
        lines = ["channel" + "".join(f"{o:>{width}}" for o in OUTCOMES) + f"{'total':>{width}}"]
        for channel in (*KINDS, "total"):
            counts = [
                self.outcomes[o] if channel == "total" else self.by_channel[channel, o]
                for o in OUTCOMES
            ]
            cells = "".join(f"{n:>{width}}" for n in [*counts, sum(counts)])
            lines.append(f"{channel:<7}{cells}")
        lines.append(f"{self.conversations_closed} conversations closed when done")
        return "\n".join(lines)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        ordered = sorted(self.durations)
        p95 = ordered[int(0.95 * (len(ordered) - 1))] if ordered else 0.0
        errors = self.outcomes["error"]
        return (
            f"{self.turns} turns, {self.turns / elapsed:.1f} turns/s, p95 {p95 * 1000:.0f} ms, "
            f"{self.outcomes['escalated']} escalated, {errors} errors"
        )


@dataclass(frozen=True)
class Plan:
    url: str
    clients: int
    seconds: float
    max_turns: int | None
    fail_share: float
    api_key: str | None
    dashboard: str | None = None


async def _goals(parley: ParleyClient) -> list[str]:
    ids = []
    for name, instructions, phrases in GOALS:
        try:
            await parley.create_goal(
                f"Demo {name}",
                instructions,
                escalation={"max_turns": 12, "trigger_phrases": phrases},
            )
        except ParleyError as error:
            if error.code != "goal_exists":  # made by an earlier demo
                raise
        ids.append(f"demo-{name.lower()}")
    return ids


def _content(rng: random.Random, plan: Plan, goal_phrases: list[str]) -> str:
    if rng.random() < plan.fail_share:
        return f"{rng.choice(QUESTIONS)} {FAIL_MARKER}"
    if rng.random() < 0.03:
        return f"Let me talk to a {goal_phrases[0]}, please."
    return rng.choice(QUESTIONS)


async def _client(
    plan: Plan, parley: ParleyClient, goals: list[str], progress: Progress, seed: int
) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + plan.seconds
    while time.monotonic() < deadline and (
        plan.max_turns is None or progress.turns < plan.max_turns
    ):
        index = rng.randrange(len(goals))
        conversation = (await parley.create_conversation(goals[index])).id
        ended = False
        for _ in range(rng.randint(2, 8)):
            if time.monotonic() >= deadline:
                break
            content = _content(rng, plan, GOALS[index][2])
            began = time.monotonic()
            channel = rng.choice(KINDS)
            outcome = await _turn(parley, conversation, content, channel)
            progress.durations.append(time.monotonic() - began)
            progress.count(channel, outcome)
            if outcome in ("escalated", "rejected"):
                ended = True
                break
        if not ended:  # a customer who is done: the conversation ends, as it would
            await parley.close_conversation(conversation)
            progress.conversations_closed += 1


async def _turn(parley: ParleyClient, conversation: uuid.UUID, content: str, kind: str) -> str:
    """One turn on ``kind``'s channel: ok, escalated, rejected (its conversation has
    ended) or error."""
    try:
        if kind == "http":
            turn = await parley.send_message(conversation, content)
            return "escalated" if turn.reply is None else "ok"
        if kind == "sse":
            events = [event async for event in parley.stream_message(conversation, content)]
        else:
            async with parley.chat(conversation) as chat:
                events = [event async for event in chat.send(content)]
    except ParleyError as error:
        return "rejected" if error.status == 409 else "error"
    if any(isinstance(event, Escalated | HeldForAgent) for event in events):
        return "escalated"
    failures = [event.error for event in events if isinstance(event, TurnFailed)]
    if any(error.code in ENDED for error in failures):
        return "rejected"
    return "error" if failures else "ok"


# The WebSocket refuses a message to an ended conversation with an error frame.
ENDED = ("conversation_closed", "conversation_escalated")


async def run(plan: Plan, out: TextIO = sys.stderr) -> Progress:
    progress = Progress()
    if plan.dashboard:
        out.write(f"watch it on {plan.dashboard}\n")
    async with ParleyClient(plan.url, api_key=plan.api_key, timeout=60) as parley:
        goals = await _goals(parley)
        clients = [
            asyncio.create_task(_client(plan, parley, goals, progress, seed))
            for seed in range(plan.clients)
        ]
        while not all(c.done() for c in clients):
            await asyncio.wait(clients, timeout=1)
            out.write("\r" + progress.line() + "   ")
            out.flush()
        for client in clients:
            client.result()  # a client that crashed says why
    out.write("\n" + progress.summary() + "\n")
    if plan.dashboard:
        out.write(f"dashboard: {plan.dashboard}\n")
    return progress
