"""Two replicas on one database: a retry with the same Idempotency-Key that reaches the
other replica while the first is still answering waits for that reply (the answer lease
in the store) instead of asking the LLM again. It made one LLM call per replica."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.app import create_app
from tests.conftest import make_settings
from tests.support.live_server import LiveServer
from tests.support.providers import ScriptedProvider
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


async def _retries_on_both(
    first: str, second: str, provider: ScriptedProvider
) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30) as http:
        goal = {"id": "g", "name": "G", "instructions": "Help."}
        assert (await http.post(f"{first}/v1/goals/", json=goal)).status_code == 201
        conversation = (await http.post(f"{first}/v1/conversations/", json={"goal_id": "g"})).json()
        path = f"/v1/conversations/{conversation['id']}/messages"
        headers = {"Idempotency-Key": "k"}
        original = asyncio.ensure_future(
            http.post(f"{first}{path}", json={"content": "hi"}, headers=headers)
        )
        # The provider runs on the first replica's own thread and loop.
        await asyncio.to_thread(
            wait_until, lambda: provider.calls, "the first replica answering", timeout=20
        )
        retries = [
            http.post(f"{server}{path}", json={"content": "hi"}, headers=headers)
            for server in (second, second, first)
        ]
        answers = await asyncio.gather(original, *retries)
    assert [answer.status_code for answer in answers] == [200] * 4
    return [answer.json() for answer in answers]


def test_retries_on_another_replica_wait_for_the_reply_being_made(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)  # both on the same SQLite file
    slow = ScriptedProvider(["one answer " * 5], chunk_delay=0.05, first_delay=0.5)
    other = ScriptedProvider(["a second answer"])
    with (
        LiveServer(create_app(settings, provider=slow)) as first,
        LiveServer(create_app(settings, provider=other)) as second,
    ):
        turns = asyncio.run(_retries_on_both(first.http_url, second.http_url, slow))
    assert {turn["reply"]["id"] for turn in turns} == {turns[0]["reply"]["id"]}
    assert len(slow.calls) == 1
    assert other.calls == []
