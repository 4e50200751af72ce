"""``parley demo``: realistic traffic against a running Parley, so its dashboards fill and
an alert can be made to fire on purpose.

Creates a few goals, then runs N clients for a bounded time (or number of turns), each
mixing whole, SSE and WebSocket turns, now and then a trigger phrase that escalates its
conversation; ``--fail`` asks the simulated LLM to fail that share of turns (it fails a
message that carries its failure marker). A live line shows turns/s, p95 and errors.

Human agents play too: they claim what waits in the handoff queue, answer, and return it
to the bot or complete it (with an outcome); some customers leave the queue before an
agent comes. Conversations end every way: closed with an outcome, closed with none for
the judged goal's judge, left idle for the timeout. In
development mode (no key) the agents are named in a header; with keys, they need an
agent key (``--agent-key``, PARLEY_DEMO_AGENT_KEY), or no agent plays.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TextIO

from parley.client import Escalated, HeldForAgent, ParleyClient, ParleyError, TurnFailed
from parley.domain.models import HandoffState, Outcome
from parley.llm.simulated import FAIL_MARKER

GOALS = (
    ("Orders", "Help customers with their orders.", ["human", "refund"]),
    ("Onboarding", "Walk new users through setting up their account.", ["agent"]),
    ("Billing", "Answer questions about invoices.", ["lawyer"]),
)
# What success is for each demo goal; the first goal's ended conversations are judged
# (the simulated judge: achieved when the customer's last message thanks or says solved).
CRITERIA = {
    "Orders": "The customer knows where their order is or how to change it.",
    "Onboarding": "The new user's account is set up.",
    "Billing": "The customer understands their invoice.",
}
JUDGED_GOAL = "Orders"
# Demo conversations left alone end this soon (the sweep ends them as timeouts).
IDLE_TIMEOUT_SECONDS = 60
SATISFIED = "Thanks, that solved it."
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
    handoffs: Counter[str] = field(default_factory=Counter)  # returned_to_bot, ...
    # How conversations were left: reported (closed with an outcome), for_judge (closed
    # with none), idle (left to the timeout).
    endings: Counter[str] = field(default_factory=Counter)

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
        e = self.endings
        lines.append(
            f"outcomes: {e['reported']} reported on close, {e['for_judge']} left to the judge, "
            f"{e['idle']} left idle (ended by the timeout)"
        )
        h = self.handoffs
        lines.append(
            f"handoffs: {h['returned_to_bot']} returned to the bot, {h['completed']} "
            f"completed by an agent, {h['abandoned']} abandoned while waiting"
        )
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
    agent_key: str | None = None  # with keys on: the key the demo's agent works with


async def _goals(parley: ParleyClient) -> list[str]:
    ids = []
    for name, instructions, phrases in GOALS:
        goal_id = f"demo-{name.lower()}"
        outcomes = {
            "success_criteria": CRITERIA[name],
            "judge": {"enabled": name == JUDGED_GOAL, "sample_rate": 1.0},
            "idle_timeout_seconds": IDLE_TIMEOUT_SECONDS,
        }
        try:
            await parley.create_goal(
                f"Demo {name}",
                instructions,
                escalation={"max_turns": 12, "trigger_phrases": phrases},
                **outcomes,  # type: ignore[arg-type]
            )
        except ParleyError as error:
            if error.code != "goal_exists":  # made by an earlier demo
                raise
            await parley.update_goal(goal_id, **outcomes)  # one made before outcomes
        ids.append(goal_id)
    return ids


def _content(rng: random.Random, plan: Plan, goal_phrases: list[str]) -> str:
    if rng.random() < plan.fail_share:
        return f"{rng.choice(QUESTIONS)} {FAIL_MARKER}"
    if rng.random() < 0.05:
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
            if outcome == "escalated":
                await _wait_or_leave(parley, conversation, rng, progress)
            if outcome in ("escalated", "rejected"):
                ended = True
                break
        if not ended:  # a customer who is done: the conversation ends, as it would
            await _leave(parley, conversation, GOALS[index][0], rng, progress)


async def _leave(
    parley: ParleyClient, conversation: uuid.UUID, goal: str, rng: random.Random, progress: Progress
) -> None:
    """Every way a customer's conversation ends: closed with the outcome the client knows,
    closed with none (the judged goal: its judge decides, from what the customer said
    last), or left alone until the goal's idle timeout ends it."""
    roll = rng.random()
    if roll < 0.1:
        progress.endings["idle"] += 1
        return
    if goal == JUDGED_GOAL:
        if rng.random() < 0.6:  # satisfied: the judge finds it achieved
            await _turn(parley, conversation, SATISFIED, "http")
        await parley.close_conversation(conversation)
        progress.endings["for_judge"] += 1
    else:
        outcome = Outcome.ACHIEVED if roll < 0.75 else Outcome.NOT_ACHIEVED
        await parley.close_conversation(conversation, outcome=outcome)
        progress.endings["reported"] += 1
    progress.conversations_closed += 1


async def _wait_or_leave(
    parley: ParleyClient, conversation: uuid.UUID, rng: random.Random, progress: Progress
) -> None:
    """A customer handed to a human says one more thing, or now and then leaves first."""
    try:
        if rng.random() < 0.25:
            left = await parley.close_conversation(conversation)
            progress.conversations_closed += 1
            if left.handoff is not None and left.handoff.state is HandoffState.ABANDONED:
                progress.handoffs["abandoned"] += 1
        else:
            await parley.send_message(conversation, "Is anyone there?")  # for the agent
    except ParleyError:
        pass  # an agent finished it meanwhile


# Agents: each looks at the queue this often, and takes this long to pick one up.
AGENT_POLL_SECONDS = 0.3
AGENT_PICKUP_SECONDS = (0.1, 1.5)


async def _agent(
    parley: ParleyClient, name: str, progress: Progress, seed: int, stop: asyncio.Event
) -> None:
    """Claims the longest-waiting handoff, answers, then returns it to the bot or
    completes it, until ``stop`` is set and the queue is empty."""
    rng = random.Random(seed)
    while True:
        waiting = (await parley.list_handoffs(limit=5)).items
        if not waiting:
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), AGENT_POLL_SECONDS)
            continue
        await asyncio.sleep(rng.uniform(*AGENT_PICKUP_SECONDS))
        conversation = waiting[0].id
        try:
            await parley.assign(conversation)
        except ParleyError:
            continue  # another agent was quicker, or the customer left
        try:
            await parley.send_as_agent(conversation, f"Hi, {name} here: I can help with that.")
            back = rng.random() < 0.5
            outcome = None if back else rng.choice((Outcome.ACHIEVED, Outcome.NOT_ACHIEVED))
            await parley.resolve(conversation, return_to_bot=back, note="demo", outcome=outcome)
            progress.handoffs["returned_to_bot" if back else "completed"] += 1
        except ParleyError:
            pass  # the customer closed it meanwhile


def _agents(plan: Plan, out: TextIO) -> list[ParleyClient]:
    """The demo's agents' clients: two named in a header with no keys, one with an agent
    key, none with only a client or admin key."""
    if plan.agent_key is not None:
        return [ParleyClient(plan.url, api_key=plan.agent_key, timeout=60)]
    if plan.api_key is None:
        return [ParleyClient(plan.url, agent=name, timeout=60) for name in AGENT_NAMES]
    out.write("no agent key (--agent-key): handoffs wait for a human of yours\n")
    return []


AGENT_NAMES = ("demo-ann", "demo-bob")
# Once the customers are done, the agents have this long to clear the queue.
AGENT_GRACE_SECONDS = 10.0


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
    agents = _agents(plan, out)
    async with ParleyClient(plan.url, api_key=plan.api_key, timeout=60) as parley:
        goals = await _goals(parley)
        clients = [
            asyncio.create_task(_client(plan, parley, goals, progress, seed))
            for seed in range(plan.clients)
        ]
        stop = asyncio.Event()
        working = [
            asyncio.create_task(_agent(agent, name, progress, seed, stop))
            for seed, (agent, name) in enumerate(zip(agents, AGENT_NAMES, strict=False))
        ]
        try:
            while not all(c.done() for c in clients):
                await asyncio.wait(clients, timeout=1)
                out.write("\r" + progress.line() + "   ")
                out.flush()
            stop.set()  # the agents clear the queue, then stop
            if working:
                await asyncio.wait(working, timeout=AGENT_GRACE_SECONDS)
        finally:
            for task in working:
                task.cancel()
            for agent in agents:
                await agent.aclose()
        for client in clients:
            client.result()  # a client that crashed says why
        for task in working:
            if task.done() and not task.cancelled():
                task.result()
    out.write("\n" + progress.summary() + "\n")
    if plan.dashboard:
        out.write(f"dashboard: {plan.dashboard}\n")
    return progress
