"""The agent console at /agent, in headless Chromium: two agents signed in with their keys
in two browsers, one customer over the API following the conversation over SSE, and the
whole loop, live: the escalation appears in both queues, one agent claims it and it leaves
the other's, the customer's message appears in the transcript, the agent's reply reaches
the customer, and the conversation goes back to the bot."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.api.schemas import LiveEventOut
from parley.app import create_app
from parley.client import ParleyClient
from tests.conftest import make_settings
from tests.support.browser import Browser
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.integration

BOOTSTRAP = "bootstrap-secret"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(create_app(make_settings(tmp_path, api_keys=BOOTSTRAP))) as live:
        yield live


def _keys(url: str) -> dict[str, str]:
    admin = {"authorization": f"Bearer {BOOTSTRAP}"}
    goal = {
        "id": "support",
        "name": "Support",
        "instructions": "Help.",
        "escalation": {"trigger_phrases": ["human"]},
    }
    httpx.post(f"{url}/v1/goals/", json=goal, headers=admin).raise_for_status()
    secrets = {}
    for name, role in (("alice", "client"), ("ann", "agent"), ("bob", "agent")):
        made = httpx.post(f"{url}/v1/keys/", json={"name": name, "role": role}, headers=admin)
        made.raise_for_status()
        secrets[name] = made.json()["secret"]
    return secrets


def _escalated(url: str, key: str) -> str:
    customer = {"authorization": f"Bearer {key}"}
    made = httpx.post(f"{url}/v1/conversations/", json={"goal_id": "support"}, headers=customer)
    conversation: str = made.json()["id"]
    turn = httpx.post(
        f"{url}/v1/conversations/{conversation}/messages",
        json={"content": "a human please"},
        headers=customer,
    )
    assert turn.json()["escalation_reason"] == "trigger_phrase"
    return conversation


def _until(browser: Browser, expression: str, timeout: float = 30) -> Any:
    """Until ``expression`` is truthy in the page (it updates itself: nothing reloads)."""
    deadline = time.monotonic() + timeout
    while not (value := browser.evaluate(expression)):
        assert time.monotonic() < deadline, f"never true: {expression}"
        time.sleep(0.1)
    return value


def _sign_in(browser: Browser, url: str, key: str) -> None:
    browser.open(f"{url}/agent/")
    _until(browser, "!document.getElementById('login').hidden")
    browser.evaluate(
        f"document.querySelector('#login [name=key]').value = {json.dumps(key)};"
        "document.getElementById('login').requestSubmit()"
    )
    _until(browser, "document.body.dataset.ready === 'true'")
    # Signed in, the form is gone from the page (not only marked hidden) and the console shows.
    assert browser.evaluate("document.getElementById('login').offsetParent === null")
    assert browser.evaluate("document.getElementById('console').offsetParent !== null")


def _in_list(list_id: str, conversation: str) -> str:
    return f"!!document.querySelector('#{list_id} li[data-id=\"{conversation}\"]')"


def _click(browser: Browser, selector: str) -> None:
    _until(browser, f"!document.querySelector({json.dumps(selector)}).disabled")
    browser.evaluate(f"document.querySelector({json.dumps(selector)}).click()")


def test_two_agents_and_a_customer_work_a_handoff_live_in_the_console(
    server: LiveServer, tmp_path: Path
) -> None:
    keys = _keys(server.http_url)
    customer_saw: list[LiveEventOut] = []

    async def customer(conversation: str, done: threading.Event) -> None:
        async with ParleyClient(server.http_url, api_key=keys["alice"]) as alice:
            async for event in alice.follow_conversation(conversation, last_event_id=0):
                customer_saw.append(event)
                if event.step is not None and event.step.value == "returned_to_bot":
                    done.set()
                    return

    conversation = _escalated(server.http_url, keys["alice"])
    with Browser(tmp_path / "ann") as ann, Browser(tmp_path / "bob") as bob:
        _sign_in(ann, server.http_url, keys["ann"])
        _sign_in(bob, server.http_url, keys["bob"])
        assert ann.evaluate("document.getElementById('who').textContent") == "ann (agent)"
        # Both queues show it; ann opens it and claims it; it leaves bob's queue, live.
        _until(ann, _in_list("waiting", conversation))
        _until(bob, _in_list("waiting", conversation))
        ann.evaluate(f"document.querySelector('#waiting li[data-id=\"{conversation}\"]').click()")
        _until(ann, "document.getElementById('conversation').dataset.state === 'waiting'")
        _click(ann, "#claim")
        _until(ann, "document.getElementById('conversation').dataset.state === 'assigned'")
        _until(ann, _in_list("mine", conversation))
        _until(bob, f"!{_in_list('waiting', conversation)}")
        # The customer writes while held: it appears in ann's transcript, live.
        done = threading.Event()
        following = threading.Thread(target=asyncio.run, args=(customer(conversation, done),))
        following.start()
        httpx.post(
            f"{server.http_url}/v1/conversations/{conversation}/messages",
            json={"content": "is anyone there?"},
            headers={"authorization": f"Bearer {keys['alice']}"},
        ).raise_for_status()
        _until(
            ann,
            "[...document.querySelectorAll('#transcript li[data-role=user]')]"
            ".some(li => li.textContent.includes('is anyone there?'))",
        )
        # Ann answers; then gives it back to the bot.
        ann.evaluate(
            "document.querySelector('#reply [name=content]').value = 'Ann here, how can I help?';"
            "document.getElementById('reply').requestSubmit()"
        )
        _until(ann, "!!document.querySelector('#transcript li[data-role=agent]')")
        _click(ann, "#return")
        _until(ann, "document.getElementById('conversation').dataset.state === 'resolved'")
        assert done.wait(30), "the customer never saw the conversation go back to the bot"
        following.join(timeout=30)
        _until(ann, f"!{_in_list('mine', conversation)}")
        ann.screenshot(tmp_path / "console.png")
    said = [(e.event.value, e.step.value if e.step else None) for e in customer_saw]
    assert ("handoff", "assigned") in said
    agent_messages = [e.message for e in customer_saw if e.message and e.message.author == "ann"]
    assert [m.content for m in agent_messages] == ["Ann here, how can I help?"]
    assert said[-1] == ("handoff", "returned_to_bot")
    status = httpx.get(
        f"{server.http_url}/v1/conversations/{conversation}",
        headers={"authorization": f"Bearer {keys['alice']}"},
    ).json()["status"]
    assert status == "active"
