"""What the API documents is what it sends: every SSE event and WebSocket frame a turn
produces validates against the schemas in /openapi.json, and every key-guarded route
documents the 401 and 429 it can answer. The SSE response omitted its first event
(accepted) and described no payload; the WebSocket protocol was not described at all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from parley.llm import LLMError, LLMErrorKind
from tests.api.helpers import make_conversation, make_goal
from tests.conftest import app_client, make_settings
from tests.support.providers import ScriptedProvider

MESSAGES = "/v1/conversations/{conversation_id}/messages"


def _validator(spec: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for one schema of the document, its $refs resolved within it."""
    return Draft202012Validator({**spec, "$ref": f"#/components/schemas/{name}"})


def _sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if fields:
            events.append({"event": fields["event"], "data": json.loads(fields["data"])})
    return events


@pytest.fixture
def client(tmp_path: Path) -> Any:
    # A reply, a failure, a reply: ok, error and (by trigger phrase) escalated turns.
    provider = ScriptedProvider(["hello there", LLMError(LLMErrorKind.SERVER_ERROR, "down")] * 4)
    settings = make_settings(tmp_path, llm_max_retries=0)
    with app_client(settings, provider) as test_client:
        yield test_client


def test_every_sse_event_a_turn_sends_is_the_documented_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    documented = spec["paths"][MESSAGES]["post"]["responses"]["200"]["content"]
    assert documented["text/event-stream"]["schema"] == {"$ref": "#/components/schemas/SseEvent"}
    validator = _validator(spec, "SseEvent")
    make_goal(client, trigger_phrases=["human"], max_llm_failures=10)
    url = MESSAGES.format(conversation_id=make_conversation(client))
    seen = set()
    for content in ("hi", "again", "a human please"):
        response = client.post(url, json={"content": content, "stream": True})
        events = _sse_events(response.text)
        assert events[0]["event"] == "accepted"
        for event in events:
            validator.validate(event)
            seen.add(event["event"])
    assert seen == {"accepted", "token", "done", "error", "escalated"}


def test_every_websocket_frame_is_the_documented_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    server_frames = _validator(spec, "WsServerFrame")
    client_frames = _validator(spec, "WsClientFrame")
    make_goal(client, trigger_phrases=["human"], max_llm_failures=10)
    conversation_id = make_conversation(client)
    sent: list[dict[str, Any]] = [
        {"type": "ping"},
        {"type": "message", "content": "hi", "id": "k1"},
        {"type": "message", "content": "again"},
        {"type": "message", "content": "nope", "extra": 1},  # refused: invalid_frame
        {"type": "message", "content": "a human please"},
    ]
    seen = set()
    with client.websocket_connect(f"/v1/conversations/{conversation_id}/ws") as ws:
        for frame in sent:
            if "extra" not in frame:
                client_frames.validate(frame)
            ws.send_json(frame)
            while True:
                received = ws.receive_json()
                server_frames.validate(received)
                seen.add(received["type"])
                if received["type"] in ("pong", "done", "error"):
                    break
                # The escalation is a turn's frame and a live event of the conversation
                # (pushed beside the turn's frames, in either order): both, validated.
                if {"escalated", "event"} <= seen:
                    break
    assert seen == {"pong", "accepted", "token", "done", "error", "escalated", "event"}
    assert spec["x-websocket"]["/v1/conversations/{conversation_id}/ws"]["serverFrames"] == {
        "$ref": "#/components/schemas/WsServerFrame"
    }


def test_a_refused_frame_with_its_retry_time_is_the_documented_schema(tmp_path: Path) -> None:
    # The goal, the conversation and the handshake take three tokens of the burst.
    settings = make_settings(tmp_path, rate_limit_per_minute=1, rate_limit_burst=3)
    with app_client(settings) as limited:
        validator = _validator(limited.get("/openapi.json").json(), "WsServerFrame")
        make_goal(limited)
        conversation_id = make_conversation(limited)
        with limited.websocket_connect(f"/v1/conversations/{conversation_id}/ws") as ws:
            ws.send_json({"type": "message", "content": "hi"})
            frame = ws.receive_json()
    assert frame["code"] == "too_many_requests"
    assert frame["retry_after"] > 0
    validator.validate(frame)


def test_every_key_guarded_operation_documents_401_and_429(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"]["description"].strip()
    guarded = [
        (path, op)
        for path, item in spec["paths"].items()
        if path.startswith("/v1/")
        for op in item.values()
    ]
    assert guarded
    for path, op in guarded:
        assert {"401", "429"} <= set(op["responses"]), path
        assert "Retry-After" in op["responses"]["429"]["headers"], path
