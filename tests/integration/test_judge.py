"""The judge in a running app: on the simulated provider (its documented rule) and through
the official groq SDK against a Groq-compatible server answering canned structured output.
Its verdicts become outcomes; its calls are LLM requests of operation judge, with their
cost; the metrics, the API's results and the database agree after a mixed run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from parley.llm.prices import PRICES
from parley.llm.simulated import MALFORMED_VERDICT_MARKER
from tests.conftest import app_client, make_settings
from tests.support.groq_server import GroqTestServer, Reply
from tests.support.live_server import LiveServer
from tests.support.metrics import registry_of, total, value
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

GOAL = {
    "id": "support",
    "name": "Support",
    "instructions": "Help.",
    "success_criteria": "The customer says their problem is solved.",
    "judge": {"enabled": True},
}
FAST = {"judge_poll_seconds": 0.05, "judge_backoff_seconds": 0.05}


def _ended(client: TestClient, says: str, outcome: str | None = None) -> str:
    conversation: str = client.post("/v1/conversations/", json={"goal_id": "support"}).json()["id"]
    turn = client.post(f"/v1/conversations/{conversation}/messages", json={"content": says})
    assert turn.status_code == 200, turn.text
    body = {"outcome": outcome} if outcome else None
    closed = client.post(f"/v1/conversations/{conversation}/close", json=body)
    assert closed.status_code == 200, closed.text
    return conversation


def _settled(client: TestClient, conversation: str) -> dict[str, Any]:
    def done() -> dict[str, Any]:  # empty (falsy) while the judge has it
        detail: dict[str, Any] = client.get(f"/v1/conversations/{conversation}").json()
        evaluation = detail["evaluation"]
        return detail if evaluation is None or evaluation["state"] != "pending" else {}

    settled: dict[str, Any] = wait_until(done, "the judge's verdict", timeout=30)
    return settled


def test_the_simulated_judge_grades_by_its_rule_and_every_count_agrees(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, judge_max_attempts=2, **FAST)
    with app_client(settings) as client:
        assert client.post("/v1/goals/", json=GOAL).status_code == 201
        solved = _ended(client, "It works now, thanks!")
        unsolved = _ended(client, "My order is still missing.")
        garbled = _ended(client, f"Hello {MALFORMED_VERDICT_MARKER}")
        reported = _ended(client, "All good.", outcome="not_achieved")

        verdicts = {c: _settled(client, c) for c in (solved, unsolved, garbled, reported)}
        registry = registry_of(client)
        results = client.get("/v1/goals/support/outcomes").json()
        assert client.get("/metrics").status_code == 200  # the queue's gauge, read now

    assert (verdicts[solved]["outcome"], verdicts[solved]["outcome_source"]) == (
        "achieved",
        "judge",
    )
    assert verdicts[solved]["evaluation"]["score"] == 0.9
    assert verdicts[unsolved]["outcome"] == "not_achieved"
    assert verdicts[garbled]["evaluation"]["state"] == "failed"
    assert (verdicts[garbled]["outcome"], verdicts[garbled]["outcome_source"]) == (
        "unknown",
        "client",
    )
    assert verdicts[reported]["evaluation"] is None  # the client said: no judge
    assert verdicts[reported]["outcome_source"] == "client"

    evaluations = {
        label: value(registry, "goal_evaluations_total", goal_id="support", label=label)
        for label in ("achieved", "not_achieved", "error")
    }
    assert evaluations == {"achieved": 1, "not_achieved": 1, "error": 1}
    model = settings.default_model
    judge_calls = value(
        registry,
        "llm_requests_total",
        model=model,
        stream_mode="non_streaming",
        status="success",
        operation="judge",
    )
    assert judge_calls == 4  # solved, unsolved, and the garbled one twice
    assert value(registry, "goal_judge_duration_seconds_count") == 4
    assert value(registry, "goal_evaluations_pending") == 0
    counts = {outcome: stats["count"] for outcome, stats in results["outcomes"].items()}
    assert counts == {"achieved": 1, "not_achieved": 2, "abandoned": 0, "unknown": 1}
    for outcome, count in counts.items():
        counted = total(registry, "conversations_ended_total", goal_id="support", outcome=outcome)
        assert counted == count, outcome


def test_a_groq_judge_gets_json_mode_and_its_verdict_and_cost_are_its_own(
    tmp_path: Path,
) -> None:
    chat_model, judge_model = "llama-3.1-8b-instant", "openai/gpt-oss-20b"
    fake = GroqTestServer()
    verdict = {"label": "achieved", "score": 0.75, "explanation": "The order was found."}
    fake.then(Reply("Your order ships today."), Reply(json.dumps(verdict), prompt_tokens=400))
    with LiveServer(fake.app) as groq:
        settings = make_settings(
            tmp_path,
            llm_provider="groq",
            groq_api_key="gsk_test",
            groq_base_url=groq.http_url,
            default_model=chat_model,
            judge_model=judge_model,
            **FAST,
        )
        with app_client(settings) as client:
            assert client.post("/v1/goals/", json=GOAL).status_code == 201
            conversation = _ended(client, "Where is my order?")
            judged = _settled(client, conversation)
            registry = registry_of(client)
    chat, judge = (request["body"] for request in fake.requests)
    assert "response_format" not in chat
    assert judge["response_format"] == {"type": "json_object"}
    assert judge["model"] == judge_model
    assert "Where is my order?" in judge["messages"][-1]["content"]
    assert (judged["outcome"], judged["outcome_source"]) == ("achieved", "judge")
    assert judged["evaluation"]["model"] == judge_model
    assert judged["evaluation"]["explanation"] == "The order was found."
    cost = value(registry, "llm_cost_usd_total", model=judge_model, key_name="", operation="judge")
    price = PRICES[judge_model]
    completion_tokens = len(json.dumps(verdict).split(" "))
    expected = (400 * price.input_per_million + completion_tokens * price.output_per_million) / 1e6
    assert cost == pytest.approx(expected)
    chat_cost = value(
        registry, "llm_cost_usd_total", model=judge_model, key_name="", operation="chat"
    )
    assert chat_cost == 0
