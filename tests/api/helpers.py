"""Small helpers the API tests share."""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi.testclient import TestClient

from parley.client import ParleyClient, ParleyError


def make_goal(client: TestClient, goal_id: str = "support", **escalation: Any) -> str:
    body: dict[str, Any] = {
        "id": goal_id,
        "name": "Support",
        "instructions": "Help customers with orders.",
    }
    if escalation:
        body["escalation"] = escalation
    response = client.post("/v1/goals/", json=body)
    assert response.status_code == 201, response.text
    return goal_id


def make_conversation(client: TestClient, goal_id: str = "support") -> str:
    response = client.post("/v1/conversations/", json={"goal_id": goal_id})
    assert response.status_code == 201, response.text
    conversation_id: str = response.json()["id"]
    return conversation_id


async def start_conversation(
    http: httpx.AsyncClient, goal_id: str = "support", **escalation: Any
) -> str:
    """A new conversation over a live server's API (through parley.client, on ``http``'s
    connections and key); its goal is created once."""
    parley = ParleyClient(http=http)
    try:
        await parley.get_goal(goal_id)
    except ParleyError as missing:
        if missing.status != 404:
            raise
        await parley.create_goal(goal_id, "Help.", goal_id=goal_id, escalation=escalation or None)
    return str((await parley.create_conversation(goal_id)).id)


def parse_sse(text: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of an SSE body."""
    events = []
    for block in text.strip().split("\n\n"):
        event, data = "message", ""
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data += line[len("data: ") :]
        events.append((event, json.loads(data) if data else None))
    return events
