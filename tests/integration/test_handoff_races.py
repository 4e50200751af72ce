"""The handoff under concurrency and misuse, over HTTP on a real server, on SQLite and
PostgreSQL: twenty agents claiming at once (exactly one wins, one event), a resolve sent
twice at once (one wins, nothing changes after), and messages after the handoff ended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.app import create_app
from parley.client import ParleyClient
from tests.conftest import make_settings
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.integration

AGENTS = 20


@pytest.fixture
async def http(tmp_path: Path, database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    # No key: development mode, where each agent names itself in X-Parley-Agent.
    with LiveServer(create_app(make_settings(tmp_path, database_url=database_url))) as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
            goal = {"id": "support", "name": "Support", "instructions": "Help."}
            (await client.post("/v1/goals/", json=goal)).raise_for_status()
            yield client


async def _escalated(http: httpx.AsyncClient) -> str:
    made = await http.post("/v1/conversations/", json={"goal_id": "support"})
    conversation: str = made.json()["id"]
    (await http.post(f"/v1/conversations/{conversation}/escalate", json={})).raise_for_status()
    return conversation


def _as(agent: str) -> dict[str, str]:
    return {"x-parley-agent": agent}


async def _steps(http: httpx.AsyncClient, conversation: str, count: int) -> list[str]:
    """The first ``count`` events of the conversation's log, read through its stream."""
    steps: list[str] = []
    events = ParleyClient(http=http).follow_conversation(conversation, last_event_id=0)
    async with asyncio.timeout(20):
        async for event in events:
            steps.append(event.step.value if event.step else event.event.value)
            if len(steps) == count:
                break
    await events.aclose()
    return steps


async def test_twenty_agents_claiming_at_once_one_wins_and_one_event_says_so(
    http: httpx.AsyncClient,
) -> None:
    conversation = await _escalated(http)
    path = f"/v1/conversations/{conversation}/assign"
    answers = await asyncio.gather(
        *(http.post(path, headers=_as(f"agent-{n}")) for n in range(AGENTS))
    )
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200] + [409] * (AGENTS - 1)
    refused = {a.json()["error"]["code"] for a in answers if a.status_code == 409}
    assert refused == {"already_assigned"}
    winner = next(a for a in answers if a.status_code == 200).json()["handoff"]["agent"]
    detail = (await http.get(f"/v1/conversations/{conversation}")).json()
    assert detail["handoff"]["agent"] == winner
    # Exactly one claim in the log (what every subscriber and webhook is told).
    resolve = {"return_to_bot": True}
    (
        await http.post(
            f"/v1/conversations/{conversation}/resolve", json=resolve, headers=_as(winner)
        )
    ).raise_for_status()
    steps = await _steps(http, conversation, 3)
    assert steps == ["escalated", "assigned", "returned_to_bot"]


async def test_a_resolve_sent_twice_at_once_changes_the_conversation_once(
    http: httpx.AsyncClient,
) -> None:
    conversation = await _escalated(http)
    base = f"/v1/conversations/{conversation}"
    (await http.post(f"{base}/assign", headers=_as("ann"))).raise_for_status()
    done = {"return_to_bot": False, "note": "sorted"}
    answers = await asyncio.gather(
        *(http.post(f"{base}/resolve", json=done, headers=_as("ann")) for _ in range(2))
    )
    assert sorted(a.status_code for a in answers) == [200, 409]
    after = (await http.get(base)).json()
    assert after["status"] == "completed"
    assert after["handoff"]["state"] == "resolved"
    assert after["handoff"]["note"] == "sorted"
    # After the end: the agent can no longer write, nor resolve again; nothing changes.
    late = await http.post(f"{base}/messages", json={"content": "one more"}, headers=_as("ann"))
    assert late.status_code == 409
    again = await http.post(f"{base}/resolve", json={"return_to_bot": True}, headers=_as("ann"))
    assert again.status_code == 409
    customer = await http.post(f"{base}/messages", json={"content": "hello?"})
    assert (customer.status_code, customer.json()["error"]["code"]) == (
        409,
        "conversation_closed",
    )
    assert (await http.get(base)).json() == after


async def test_a_conversation_back_with_the_bot_answers_the_customer_again(
    http: httpx.AsyncClient,
) -> None:
    conversation = await _escalated(http)
    base = f"/v1/conversations/{conversation}"
    (await http.post(f"{base}/assign", headers=_as("ann"))).raise_for_status()
    back = {"return_to_bot": True}
    (await http.post(f"{base}/resolve", json=back, headers=_as("ann"))).raise_for_status()
    turn = await http.post(f"{base}/messages", json={"content": "thanks, one more thing"})
    assert turn.status_code == 200
    assert turn.json()["reply"] is not None
    late = await http.post(f"{base}/messages", json={"content": "me again"}, headers=_as("ann"))
    assert (late.status_code, late.json()["error"]["code"]) == (409, "not_in_handoff")


async def test_a_customer_idle_past_the_goals_timeout_leaves_the_queue_abandoned(
    tmp_path: Path, database_url: str
) -> None:
    """Every replica sweeps (here, often); the goal waits one second."""
    settings = make_settings(tmp_path, database_url=database_url, idle_sweep_seconds=0.1)
    with LiveServer(create_app(settings)) as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
            goal = {
                "id": "quick",
                "name": "Quick",
                "instructions": "Help.",
                "idle_timeout_seconds": 1,
            }
            made = await http.post("/v1/goals/", json=goal)
            assert made.json()["idle_timeout_seconds"] == 1
            conversation = (await http.post("/v1/conversations/", json={"goal_id": "quick"})).json()
            path = f"/v1/conversations/{conversation['id']}"
            (await http.post(f"{path}/escalate", json={})).raise_for_status()

            async def abandoned() -> dict[str, Any]:
                while True:
                    detail: dict[str, Any] = (await http.get(path)).json()
                    if detail["status"] == "completed":
                        return detail
                    await asyncio.sleep(0.1)

            async with asyncio.timeout(30):
                detail = await abandoned()
            assert detail["handoff"]["state"] == "abandoned"
            queue = (await http.get("/v1/handoffs/", params={"state": "abandoned"})).json()
            assert [item["id"] for item in queue["items"]] == [conversation["id"]]
            metrics = (await http.get("/metrics")).text
    assert 'handoffs_abandoned_total{goal_id="quick"} 1.0' in metrics
