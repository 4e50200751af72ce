"""Webhooks against a real receiver: signed per the Standard Webhooks specification (the
receiver verifies with the reference library), every event delivered in order per
conversation through a receiver that answers 500 and times out before it recovers, and a
delivery given up on is listed by `parley webhooks failed` and sent again by
`parley webhooks redeliver`; a replica killed while it delivers leaves the event to
another replica once its lease runs out (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from parley.app import create_app
from parley.cli import main
from tests.conftest import make_settings
from tests.support.live_server import LiveServer
from tests.support.serve import serve_process
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """Answers each request as ``script`` says, then 200; keeps what it received."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.received: list[dict[str, Any]] = []
        self.answered: list[str] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            action = self.script.pop(0) if self.script else "ok"
            self.answered.append(action)
        if action == "timeout":
            await asyncio.sleep(3)  # past Parley's timeout: never recorded as received
        if action == "hang":
            await asyncio.sleep(120)  # its sender is killed meanwhile
        if action != "ok":
            return Response(status_code=500)
        payload = Webhook(SECRET).verify(body, dict(request.headers))  # raises if forged
        with self._lock:
            self.received.append({"id": request.headers["webhook-id"], **payload})
        return Response(status_code=204)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, LiveServer]]:
    hooks = Receiver(["500", "timeout", "500"])
    with LiveServer(hooks.app) as server:
        yield hooks, server


def _parley(tmp_path: Path, url: str, **overrides: Any) -> LiveServer:
    settings = make_settings(
        tmp_path,
        webhooks=[{"url": url, "secret": SECRET, "name": "crm"}],
        webhook_timeout_seconds=1,
        webhook_backoff_seconds=0.05,
        **overrides,
    )
    return LiveServer(create_app(settings))


def _handoff(http: httpx.Client, goal: bool = True) -> str:
    if goal:
        body = {"id": "support", "name": "Support", "instructions": "Help."}
        http.post("/v1/goals/", json=body).raise_for_status()
    conversation: str = http.post("/v1/conversations/", json={"goal_id": "support"}).json()["id"]
    http.post(f"/v1/conversations/{conversation}/escalate", json={}).raise_for_status()
    return conversation


def test_every_event_reaches_a_receiver_that_fails_then_recovers_signed_and_in_order(
    tmp_path: Path, receiver: tuple[Receiver, LiveServer]
) -> None:
    hooks, hook_server = receiver
    with (
        _parley(tmp_path, f"{hook_server.http_url}/hook") as parley,
        httpx.Client(base_url=parley.http_url, timeout=30) as http,
    ):
        worked = _handoff(http)
        path = f"/v1/conversations/{worked}"
        http.post(f"{path}/messages", json={"content": "hello?"}).raise_for_status()
        agent = {"x-parley-agent": "ann"}
        http.post(f"{path}/assign", headers=agent).raise_for_status()
        http.post(f"{path}/messages", json={"content": "Ann"}, headers=agent)  # not sent
        resolve = {"return_to_bot": True}
        http.post(f"{path}/resolve", json=resolve, headers=agent).raise_for_status()
        left = _handoff(http, goal=False)
        http.post(f"/v1/conversations/{left}/close").raise_for_status()

        def every_one_arrived() -> bool:
            return len({r["id"] for r in hooks.received}) == 6

        wait_until(every_one_arrived, hooks.answered, timeout=60)
        metrics = http.get("/metrics").text
    assert hooks.answered[:3] == ["500", "timeout", "500"]  # then it recovered
    by_conversation: dict[str, list[str]] = {}
    for delivery in hooks.received:
        conversation = delivery["data"]["conversation_id"]
        if delivery["type"] not in by_conversation.get(conversation, []):
            by_conversation.setdefault(conversation, []).append(delivery["type"])
    assert by_conversation == {
        worked: [
            "conversation.escalated",
            "handoff.message",
            "handoff.assigned",
            "handoff.resolved",
        ],
        left: ["conversation.escalated", "conversation.abandoned"],
    }
    message = next(r for r in hooks.received if r["type"] == "handoff.message")
    assert message["data"]["message"]["content"] == "hello?"
    assert 'webhook_deliveries_total{event="conversation.escalated",outcome="retry"}' in metrics


def test_a_delivery_given_up_on_is_listed_and_sent_again(
    tmp_path: Path, receiver: tuple[Receiver, LiveServer], capsys: pytest.CaptureFixture[str]
) -> None:
    hooks, hook_server = receiver
    hooks.script[:] = ["500"] * 1000  # down until told otherwise
    database = tmp_path / "parley.db"
    url = f"sqlite+aiosqlite:///{database}"
    # A retry window of about a second: it gives up at once.
    with (
        _parley(tmp_path, f"{hook_server.http_url}/hook", webhook_retry_hours=0.0003) as parley,
        httpx.Client(base_url=parley.http_url, timeout=30) as http,
    ):
        _handoff(http)
        wait_until(lambda: 'outcome="failed"} 1.0' in http.get("/metrics").text, timeout=60)
        environment = {"PARLEY_DATABASE_URL": url}
        with pytest.MonkeyPatch.context() as patch:
            for name, value in environment.items():
                patch.setenv(name, value)
            assert main(["webhooks", "failed"]) == 0
            listed = capsys.readouterr().out
            event_id = int(listed.splitlines()[1].split()[0])
            assert "crm" in listed
            assert "conversation.escalated" in listed
            assert "HTTP 500" in listed
            hooks.script.clear()  # the receiver is back
            assert main(["webhooks", "redeliver", str(event_id)]) == 0
        wait_until(lambda: len(hooks.received) == 1, timeout=60)
    assert hooks.received[0]["type"] == "conversation.escalated"
    assert hooks.received[0]["id"] == f"evt_{event_id}"


def test_a_bad_webhook_secret_stops_the_start_with_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "PARLEY_WEBHOOKS", json.dumps([{"url": "https://example.com/h", "secret": "hunter2"}])
    )
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert "PARLEY_WEBHOOKS" in err
    assert "whsec_" in err
    assert "hunter2" not in err


def test_a_replica_killed_mid_delivery_leaves_the_event_to_another(
    tmp_path: Path, database_url: str
) -> None:
    hooks = Receiver(["hang"])
    with LiveServer(hooks.app) as hook_server:
        endpoint = {"url": f"{hook_server.http_url}/hook", "secret": SECRET, "name": "crm"}
        env = {"PARLEY_DATABASE_URL": database_url, "PARLEY_WEBHOOKS": json.dumps([endpoint])}
        with serve_process(tmp_path, env=env) as first:
            with httpx.Client(base_url=first.url, timeout=30) as http:
                conversation = _handoff(http)
            wait_until(lambda: hooks.answered == ["hang"], "the first replica delivering")
            # The second replica starts while the first holds the delivery's lease.
            with serve_process(tmp_path, env=env):
                first.process.kill()  # kill -9, mid-delivery
                first.process.wait()
                wait_until(lambda: hooks.received, "the delivery by the second", timeout=120)
    assert hooks.answered == ["hang", "ok"]  # once more, by the replica left
    (delivered,) = hooks.received
    assert (delivered["type"], delivered["data"]["conversation_id"]) == (
        "conversation.escalated",
        conversation,
    )
