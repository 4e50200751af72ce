"""Traces (OTLP/HTTP into a receiver here), on when the standard OTEL_* variables say so:
a streamed turn is one trace continuing the caller's ``traceparent`` (server span, turn
span, GenAI client span with the conventions' attributes), the Groq request carries the
trace on, and the log line and the exemplar on /metrics name the same trace. Off, no
span is made and the SDK is never imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.app import create_app
from parley.config import Settings
from tests.conftest import make_settings
from tests.support.groq_server import GroqTestServer, Reply
from tests.support.live_server import LiveServer
from tests.support.otlp import OtlpReceiver, ReceivedSpan, receiving_traces
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
MESSAGES_ROUTE = "POST /v1/conversations/{conversation_id}/messages"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with receiving_traces(monkeypatch) as otlp:
        monkeypatch.setenv("OTEL_SERVICE_NAME", "parley-under-test")
        yield otlp


def _streamed_turn(url: str) -> tuple[str, str]:
    """A goal, a conversation and one streamed turn sent with a caller's traceparent; the
    conversation id and the OpenMetrics exposition after it."""
    with httpx.Client(base_url=url, timeout=30) as http:
        goal = {"id": "support", "name": "Support", "instructions": "Help."}
        assert http.post("/v1/goals/", json=goal).status_code == 201
        conversation = http.post("/v1/conversations/", json={"goal_id": "support"}).json()["id"]
        streamed = http.post(
            f"/v1/conversations/{conversation}/messages",
            json={"content": "Where is my order?", "stream": True},
            headers={"traceparent": TRACEPARENT},
        )
        assert "event: done" in streamed.text
        metrics = http.get("/metrics", headers={"Accept": "application/openmetrics-text"}).text
    return conversation, metrics


def _one(spans: list[ReceivedSpan]) -> ReceivedSpan:
    assert len(spans) == 1, spans
    return spans[0]


def _turn_trace(receiver: OtlpReceiver, conversation: str, model: str) -> ReceivedSpan:
    """Checks the turn's spans are one trace with the right parents; the LLM span."""
    server = _one(receiver.named(MESSAGES_ROUTE))
    assert (server.trace_id, server.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)
    assert server.kind == 2  # server
    assert server.attributes["http.route"] == "/v1/conversations/{conversation_id}/messages"
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource["service.name"] == "parley-under-test"
    turn = _one(receiver.named("turn"))
    assert (turn.trace_id, turn.parent_span_id) == (CALLER_TRACE, server.span_id)
    assert turn.attributes["gen_ai.conversation.id"] == conversation
    assert turn.attributes["parley.goal.id"] == "support"
    assert turn.attributes["parley.turn.channel"] == "sse"
    assert turn.attributes["parley.turn.outcome"] == "ok"
    llm = _one(receiver.named(f"chat {model}"))
    assert (llm.trace_id, llm.parent_span_id) == (CALLER_TRACE, turn.span_id)
    assert llm.kind == 3  # client
    attributes = llm.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == model
    assert attributes["gen_ai.response.model"] == model
    assert attributes["gen_ai.conversation.id"] == conversation
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    return llm


def test_a_streamed_turn_is_one_trace_from_the_callers_to_the_llm_and_its_log_and_exemplar(
    tmp_path: Path, receiver: OtlpReceiver, capfd: pytest.CaptureFixture[str], database_url: str
) -> None:
    settings = make_settings(tmp_path, log_level="INFO", database_url=database_url)
    app = create_app(settings)
    with LiveServer(app) as server:
        conversation, metrics = _streamed_turn(server.http_url)
    llm = _turn_trace(receiver, conversation, settings.default_model)
    assert llm.attributes["gen_ai.provider.name"] == "simulated"
    # The turn's statements are client spans in its trace: their SQL, never the values.
    turn = _one(receiver.named("turn"))
    statements = [
        span
        for span in receiver.spans
        if "db.query.text" in span.attributes and span.trace_id == CALLER_TRACE
    ]
    assert {span.attributes["db.operation.name"] for span in statements} >= {"INSERT", "UPDATE"}
    assert {span.parent_span_id for span in statements} <= {turn.span_id, llm.parent_span_id}
    system = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    assert all(span.attributes["db.system.name"] == system for span in statements)
    everything = repr([span.attributes for span in receiver.spans])
    assert "Where is my order?" not in everything  # no parameter, no message content
    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines() if "{" in line]
    started = [line for line in logged if line.get("event") == "llm_request_started"]
    assert started
    assert started[-1]["trace_id"] == CALLER_TRACE
    assert started[-1]["span_id"] == llm.parent_span_id  # logged inside the turn's span
    assert f'trace_id="{CALLER_TRACE}"' in metrics  # an exemplar on a latency bucket


def test_a_conversations_outcome_is_an_evaluation_result_event(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """A close with a reported outcome, and the judge's verdict: each the conventions'
    gen_ai.evaluation.result event (the judge's with its score and explanation, in a trace
    of its own linked to the close that queued it)."""
    settings = make_settings(tmp_path, judge_poll_seconds=0.05)
    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.http_url) as http:
        goal = {
            "id": "support",
            "name": "Support",
            "instructions": "Help.",
            "success_criteria": "The customer says thanks.",
            "judge": {"enabled": True},
        }
        assert http.post("/v1/goals/", json=goal).status_code == 201
        reported, judged = (
            http.post("/v1/conversations/", json={"goal_id": "support"}).json()["id"]
            for _ in range(2)
        )
        http.post(f"/v1/conversations/{judged}/messages", json={"content": "Thanks a lot!"})
        closing = {"outcome": "not_achieved"}
        assert http.post(f"/v1/conversations/{reported}/close", json=closing).status_code == 200
        assert http.post(f"/v1/conversations/{judged}/close").status_code == 200

        def verdict() -> bool:
            detail = http.get(f"/v1/conversations/{judged}").json()
            return bool(detail["evaluation"]) and detail["evaluation"]["state"] == "done"

        wait_until(verdict, "the judge's verdict")
        handed = http.post("/v1/conversations/", json={"goal_id": "support"}).json()["id"]
        agent = {"x-parley-agent": "ann"}
        assert http.post(f"/v1/conversations/{handed}/escalate", json={}).status_code == 200
        assert http.post(f"/v1/conversations/{handed}/assign", headers=agent).status_code == 200
        done = {"return_to_bot": False, "outcome": "achieved"}
        resolved = http.post(f"/v1/conversations/{handed}/resolve", json=done, headers=agent)
        assert resolved.status_code == 200
    results = {
        span.attributes["gen_ai.conversation.id"]: dict(span.events)["gen_ai.evaluation.result"]
        for span in receiver.named("evaluate goal_success")
    }
    assert results[reported]["gen_ai.evaluation.score.label"] == "not_achieved"
    assert results[reported]["parley.outcome.source"] == "client"
    assert results[judged]["gen_ai.evaluation.name"] == "goal_success"
    assert results[judged]["gen_ai.evaluation.score.label"] == "achieved"
    assert results[judged]["gen_ai.evaluation.score.value"] == 0.9
    assert results[judged]["gen_ai.evaluation.explanation"]
    reported_span = next(
        span
        for span in receiver.named("evaluate goal_success")
        if span.attributes["gen_ai.conversation.id"] == reported
    )
    closes = receiver.named("POST /v1/conversations/{conversation_id}/close")
    assert reported_span.parent_span_id in {span.span_id for span in closes}  # its request's
    (judged_span,) = (
        span
        for span in receiver.named("evaluate goal_success")
        if span.attributes["gen_ai.conversation.id"] == judged
    )
    assert judged_span.parent_span_id == ""  # the judge's own trace, linked to its close
    assert judged_span.links[0] in {(span.trace_id, span.span_id) for span in closes}
    # A handoff's steps are events on the requests that took them.
    (assign,) = receiver.named("POST /v1/conversations/{conversation_id}/assign")
    steps = dict(assign.events)
    assert steps["parley.handoff.assigned"]["gen_ai.conversation.id"] == handed
    assert steps["parley.handoff.assigned"]["parley.handoff.agent"] == "ann"
    (resolve,) = receiver.named("POST /v1/conversations/{conversation_id}/resolve")
    assert "parley.handoff.completed" in dict(resolve.events)
    assert results[handed]["parley.outcome.source"] == "agent"
    judge_calls = [s for s in receiver.spans if s.attributes.get("parley.llm.operation") == "judge"]
    assert judge_calls
    assert judge_calls[0].attributes["gen_ai.conversation.id"] == judged


def _on_groq(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    """Parley on the official Groq SDK, its requests to the test server at ``url``."""
    return make_settings(
        tmp_path, llm_provider="groq", groq_api_key="gsk_test", groq_base_url=url, **overrides
    )


def test_the_groq_request_carries_the_trace_on(tmp_path: Path, receiver: OtlpReceiver) -> None:
    groq = GroqTestServer()
    groq.then(Reply("Your order ships today."))
    with LiveServer(groq.app) as fake:
        settings = _on_groq(tmp_path, fake.http_url)
        with LiveServer(create_app(settings)) as server:
            conversation, _ = _streamed_turn(server.http_url)
    llm = _turn_trace(receiver, conversation, settings.default_model)
    assert llm.attributes["gen_ai.provider.name"] == "groq"
    (request,) = groq.requests
    assert request["headers"]["traceparent"] == f"00-{CALLER_TRACE}-{llm.span_id}-01"


def test_with_content_logging_on_the_llm_span_holds_the_messages_and_the_reply(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    """PARLEY_LOG_CONTENT is the conventions' opt-in: the messages sent, the system
    instructions and the streamed reply, as JSON; the statements still carry no values."""
    groq = GroqTestServer()
    groq.then(Reply("Your order ships today."))
    with LiveServer(groq.app) as fake:
        settings = _on_groq(tmp_path, fake.http_url, log_content=True)
        with LiveServer(create_app(settings)) as server:
            conversation, _ = _streamed_turn(server.http_url)
    attributes = _turn_trace(receiver, conversation, settings.default_model).attributes
    assert json.loads(str(attributes["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "Help."}
    ]
    sent = json.loads(str(attributes["gen_ai.input.messages"]))
    assert sent[-1] == {
        "role": "user",
        "parts": [{"type": "text", "content": "Where is my order?"}],
    }
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Your order ships today."}],
            "finish_reason": "stop",
        }
    ]
    statements = [span for span in receiver.spans if "db.query.text" in span.attributes]
    assert statements
    assert "Where is my order?" not in repr([span.attributes for span in statements])


def test_with_tracing_off_no_span_is_made_and_the_sdk_is_never_imported(
    tmp_path: Path,
) -> None:
    program = """
import sys
from fastapi.testclient import TestClient
from parley.app import create_app
from parley.config import Settings
from tests.conftest import make_settings
from pathlib import Path
from typing import Any
settings = make_settings(Path(sys.argv[1]), sim_ttft_seconds=0, sim_token_delay_seconds=0)
with TestClient(create_app(settings)) as client:
    client.post("/v1/goals/", json={"id": "g", "name": "G", "instructions": "Help."})
    conversation = client.post("/v1/conversations/", json={"goal_id": "g"}).json()["id"]
    turn = client.post(f"/v1/conversations/{conversation}/messages", json={"content": "hi"})
    assert turn.status_code == 200, turn.text
    exposed = client.get("/metrics", headers={"Accept": "application/openmetrics-text"}).text
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry.sdk"))
print("SDK:", loaded)
print("TRACE_EXEMPLAR:", "trace_id=" in exposed)
print("REQUEST_EXEMPLAR:", "request_id=" in exposed)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", program, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "SDK: []" in done.stdout
    assert "TRACE_EXEMPLAR: False" in done.stdout
    assert "REQUEST_EXEMPLAR: True" in done.stdout  # today's behaviour stays


def test_a_turn_the_caller_did_not_sample_makes_no_span_and_keeps_request_exemplars(
    tmp_path: Path, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A traceparent with the sampled flag off, under the SDK's default parent-based
    sampler: nothing below the server span is made, nothing exported, and the exemplars
    name the request, not a trace nobody kept."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    unsampled = f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"
    app = create_app(make_settings(tmp_path))
    with LiveServer(app) as server, httpx.Client(base_url=server.http_url, timeout=30) as http:
        goal = {"id": "support", "name": "Support", "instructions": "Help."}
        assert http.post("/v1/goals/", json=goal).status_code == 201
        made = http.post("/v1/conversations/", json={"goal_id": "support"})
        streamed = http.post(
            f"/v1/conversations/{made.json()['id']}/messages",
            json={"content": "Where is my order?", "stream": True},
            headers={"traceparent": unsampled},
        )
        assert "event: done" in streamed.text
        metrics = http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert [span for span in receiver.spans if span.trace_id == CALLER_TRACE] == []
    assert f'trace_id="{CALLER_TRACE}"' not in metrics.text
    assert 'request_id="' in metrics.text
