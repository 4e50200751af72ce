"""Structured logs share ids with the metrics: request id and conversation id on every event."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from parley.observability.logging import ScrubQueryStrings
from tests.api.helpers import make_conversation, make_goal
from tests.conftest import app_client, make_settings
from tests.support.groq_server import GroqTestServer, Reply
from tests.support.live_server import LiveServer


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


@pytest.mark.integration
@pytest.mark.parametrize("log_content", [False, True])
def test_message_contents_reach_the_log_only_when_asked_even_at_debug(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], log_content: bool
) -> None:
    """At DEBUG the Groq SDK logged every prompt and SQLAlchemy every SQL parameter: the
    users' messages and the replies. PARLEY_LOG_CONTENT=true is the only way in."""
    fake = GroqTestServer()
    fake.then(Reply("the-reply-text-42"))
    with LiveServer(fake.app) as groq:
        settings = make_settings(
            tmp_path,
            llm_provider="groq",
            groq_api_key="gsk_do_not_log_me",
            groq_base_url=groq.http_url,
            log_level="DEBUG",
            log_content=log_content,
        )
        with app_client(settings) as client:
            make_goal(client)
            conversation_id = make_conversation(client)
            response = client.post(
                f"/v1/conversations/{conversation_id}/messages",
                json={"content": "my-private-question-17"},
            )
            assert response.status_code == 200, response.text
    logged = "".join(capfd.readouterr())
    assert "gsk_do_not_log_me" not in logged
    for content in ("my-private-question-17", "the-reply-text-42"):
        assert (content in logged) is log_content, content
