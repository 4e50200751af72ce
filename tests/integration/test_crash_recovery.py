"""kill -9 and SIGTERM under concurrent load, then a restart and the clients' retries: nothing
acknowledged is lost, nothing is stored twice, nothing after the escalation reaches the LLM
(it is stored for the human agent)."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.serve import Served, serve_process

pytestmark = pytest.mark.integration

# One conversation escalates early (and keeps being sent to); the others take the load.
MAX_TURNS = {"tight": 3, "roomy": 1000}
CONVERSATIONS = 4
CLIENTS = 12
ENV = {"PARLEY_SIM_TTFT_SECONDS": "0", "PARLEY_SIM_TOKEN_DELAY_SECONDS": "0.01"}


class Ledger:
    def __init__(self) -> None:
        self.acknowledged: set[str] = set()
        self.unknown: set[str] = set()  # sent, no answer: the crash may have taken it
        self.sent_to: dict[str, str] = {}  # content -> conversation


async def _load(url: str, conversations: list[str], ledger: Ledger, enough: asyncio.Event) -> None:
    """Clients send messages (keyed by their content) until the server goes away."""
    numbers = itertools.count()

    async def client(http: httpx.AsyncClient, index: int) -> None:
        while True:
            content = f"m{next(numbers)}"
            conversation_id = conversations[index % CONVERSATIONS]
            ledger.sent_to[content] = conversation_id
            try:
                response = await http.post(
                    f"/v1/conversations/{conversation_id}/messages",
                    json={"content": content, "stream": index % 2 == 0},
                    headers={"Idempotency-Key": content},
                )
            except httpx.TransportError:
                ledger.unknown.add(content)
                return
            if response.status_code == 200 and "event: error" not in response.text:
                ledger.acknowledged.add(content)
            elif response.status_code in (200, 202) or "turn_interrupted" in response.text:
                ledger.acknowledged.add(content)  # stored; the stop cut its reply
            else:
                assert response.status_code in (409, 503), response.text  # refused, not stored
            if len(ledger.acknowledged) >= 40:
                enough.set()

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await asyncio.gather(*(client(http, i) for i in range(CLIENTS)))


async def _setup(url: str) -> list[str]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for goal_id, max_turns in MAX_TURNS.items():
            goal: dict[str, Any] = {
                "id": goal_id,
                "name": goal_id,
                "instructions": "Help.",
                "escalation": {"max_turns": max_turns, "trigger_phrases": []},
            }
            (await http.post("/v1/goals/", json=goal)).raise_for_status()
        ids = []
        for index in range(CONVERSATIONS):
            goal_id = "tight" if index == 0 else "roomy"
            response = await http.post("/v1/conversations/", json={"goal_id": goal_id})
            ids.append(response.json()["id"])
        return ids


async def _stop_mid_load(served: Served, how: signal.Signals) -> tuple[list[str], Ledger]:
    conversations = await _setup(served.url)
    ledger = Ledger()
    enough = asyncio.Event()
    load = asyncio.create_task(_load(served.url, conversations, ledger, enough))
    async with asyncio.timeout(60):
        await asyncio.wait(
            [load, asyncio.create_task(enough.wait())], return_when=asyncio.FIRST_COMPLETED
        )
    served.process.send_signal(how)
    async with asyncio.timeout(60):
        await load
    served.process.wait(timeout=60)
    return conversations, ledger


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
async def test_nothing_acknowledged_is_lost_or_doubled_across_a_crash(
    tmp_path: Path, database_url: str, how: signal.Signals
) -> None:
    env = {**ENV, "PARLEY_DATABASE_URL": database_url, "PARLEY_SHUTDOWN_GRACE_SECONDS": "2"}
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with serve_process(tmp_path / "first", env=env) as served:
        conversations, ledger = await _stop_mid_load(served, how)
    assert ledger.acknowledged
    with serve_process(tmp_path / "second", env=env) as restarted:
        async with httpx.AsyncClient(base_url=restarted.url, timeout=60) as http:
            # The clients retry what they got no answer for, with the same key.
            for content in sorted(ledger.unknown):
                await http.post(
                    f"/v1/conversations/{ledger.sent_to[content]}/messages",
                    json={"content": content},
                    headers={"Idempotency-Key": content},
                )
            stored: Counter[str] = Counter()
            for conversation_id in conversations:
                body = (await http.get(f"/v1/conversations/{conversation_id}")).json()
                users = [m for m in body["messages"] if m["role"] == "user"]
                replies = [m["reply_to"] for m in body["messages"] if m["role"] == "assistant"]
                limit = MAX_TURNS[body["goal_id"]] + 1
                before_escalation = {m["id"] for m in users[:limit]}
                assert set(replies) <= before_escalation, "the LLM answered after escalation"
                assert len(replies) == len(set(replies)), "two replies to one message"
                stored.update(m["content"] for m in users)
    assert all(count == 1 for count in stored.values()), "a message was stored twice"
    assert ledger.acknowledged <= set(stored), "an acknowledged message was lost"
    assert set(stored) <= ledger.acknowledged | ledger.unknown
