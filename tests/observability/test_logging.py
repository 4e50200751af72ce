"""Structured logs share ids with the metrics: request id and conversation id on every event."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from parley.observability.logging import ScrubQueryStrings
from tests.api.helpers import make_conversation, make_goal


def test_llm_events_carry_request_and_conversation_ids(client: TestClient) -> None:
    make_goal(client)
    conversation_id = make_conversation(client)
    with capture_logs(processors=[merge_contextvars]) as logs:
        response = client.post(
            f"/v1/conversations/{conversation_id}/messages",
            json={"content": "hello", "stream": True},
            headers={"X-Request-ID": "req-42"},
        )
    assert response.status_code == 200
    llm_events = [e for e in logs if e["event"].startswith("llm_request_")]
    assert [e["event"] for e in llm_events] == ["llm_request_started", "llm_request_completed"]
    for event in llm_events:
        assert event["request_id"] == "req-42"
        assert event["conversation_id"] == conversation_id
        assert event["model"] == "llama-3.1-8b-instant"
        assert event["stream_mode"] == "streaming"
    assert llm_events[1]["ttft_seconds"] is not None


def test_each_request_is_logged_once_with_its_id(client: TestClient) -> None:
    with capture_logs(processors=[merge_contextvars]) as logs:
        client.get("/healthz", headers={"X-Request-ID": "probe-1"})
    requests = [e for e in logs if e["event"] == "http_request"]
    assert len(requests) == 1
    assert requests[0]["request_id"] == "probe-1"
    assert requests[0]["status"] == 200


def test_query_strings_never_reach_the_log() -> None:
    """uvicorn logs each WebSocket handshake with its full path: a key a client put in the
    query string would land in the log. The path stays, the query is cut."""
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", "/v1/conversations/x/ws?api_key=SECRET&b=2"),
        None,
    )
    assert ScrubQueryStrings().filter(record)
    assert "SECRET" not in record.getMessage()
    assert "/v1/conversations/x/ws?…" in record.getMessage()
