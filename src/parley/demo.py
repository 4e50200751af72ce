"""``parley demo``: realistic traffic against a running Parley, so its dashboards fill and
an alert can be made to fire on purpose.

Creates a few goals, then runs N clients for a bounded time (or number of turns), each
mixing whole, SSE and WebSocket turns, now and then a trigger phrase that escalates its
conversation; ``--fail`` asks the simulated LLM to fail that share of turns (it fails a
message that carries its failure marker). A live line shows turns/s, p95 and errors.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TextIO

import httpx
from websockets.asyncio.client import connect

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


@dataclass
class Progress:
    started: float = field(default_factory=time.monotonic)
    outcomes: Counter[str] = field(default_factory=Counter)
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=500))

    @property
    def turns(self) -> int:
        return sum(self.outcomes.values())

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

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


async def _goals(http: httpx.AsyncClient) -> list[str]:
    ids = []
    for name, instructions, phrases in GOALS:
        answer = await http.post(
            "/v1/goals/",
            json={
                "name": f"Demo {name}",
                "instructions": instructions,
                "escalation": {"max_turns": 12, "trigger_phrases": phrases},
            },
        )
        if answer.status_code not in (201, 409):  # 409: made by an earlier demo
            answer.raise_for_status()
        ids.append(f"demo-{name.lower()}")
    return ids


def _content(rng: random.Random, plan: Plan, goal_phrases: list[str]) -> str:
    if rng.random() < plan.fail_share:
        return f"{rng.choice(QUESTIONS)} {FAIL_MARKER}"
    if rng.random() < 0.03:
        return f"Let me talk to a {goal_phrases[0]}, please."
    return rng.choice(QUESTIONS)


async def _client(
    plan: Plan, http: httpx.AsyncClient, goals: list[str], progress: Progress, seed: int
) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + plan.seconds
    ws_base = plan.url.replace("http", "ws", 1)
    while time.monotonic() < deadline and (
        plan.max_turns is None or progress.turns < plan.max_turns
    ):
        index = rng.randrange(len(goals))
        created = await http.post("/v1/conversations/", json={"goal_id": goals[index]})
        created.raise_for_status()
        conversation = created.json()["id"]
        path = f"/v1/conversations/{conversation}/messages"
        for _ in range(rng.randint(2, 8)):
            if time.monotonic() >= deadline:
                return
            kind = rng.choice(KINDS)
            content = _content(rng, plan, GOALS[index][2])
            began = time.monotonic()
            if kind == "ws":
                outcome = await _ws_turn(
                    f"{ws_base}{path.removesuffix('/messages')}/ws", plan.headers, content
                )
            else:
                outcome = await _http_turn(http, path, content, stream=kind == "sse")
            progress.durations.append(time.monotonic() - began)
            progress.outcomes[outcome] += 1
            if outcome in ("escalated", "closed"):
                break


async def _http_turn(http: httpx.AsyncClient, path: str, content: str, *, stream: bool) -> str:
    answer = await http.post(path, json={"content": content, "stream": stream})
    if answer.status_code == 409:
        return "closed"
    if answer.status_code != 200:
        return "error"
    if not stream:
        return "escalated" if answer.json().get("reply") is None else "ok"
    events = [
        line.removeprefix("event: ")
        for line in answer.text.splitlines()
        if line.startswith("event: ")
    ]
    if "escalated" in events:
        return "escalated"
    return "error" if "error" in events else "ok"


async def _ws_turn(url: str, headers: dict[str, str], content: str) -> str:
    async with connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "message", "content": content}))
        while True:
            kind = str(json.loads(await ws.recv())["type"])
            if kind in ("done", "escalated", "error"):
                return "ok" if kind == "done" else kind


async def run(plan: Plan, out: TextIO = sys.stderr) -> Progress:
    progress = Progress()
    async with httpx.AsyncClient(base_url=plan.url, timeout=60, headers=plan.headers) as http:
        goals = await _goals(http)
        clients = [
            asyncio.create_task(_client(plan, http, goals, progress, seed))
            for seed in range(plan.clients)
        ]
        while not all(c.done() for c in clients):
            await asyncio.wait(clients, timeout=1)
            out.write("\r" + progress.line() + "   ")
            out.flush()
        for client in clients:
            client.result()  # a client that crashed says why
    out.write("\n")
    return progress
