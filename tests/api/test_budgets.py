"""Spend and budgets: each reply's cost charged to the key that asked for it, shown under
/v1/keys, a key past its budget refused before any LLM call (429 budget_exceeded, on HTTP,
SSE and WebSocket alike), and a goal's per-conversation budget escalating with reason
``budget``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from parley.domain.keys import BudgetPeriod
from parley.llm.prices import estimate_cost
from parley.llm.types import Usage
from tests.api.helpers import parse_sse
from tests.conftest import app_client, make_settings, postgres_url
from tests.support.providers import ScriptedProvider

BOOTSTRAP = "bootstrap-secret"
ADMIN = {"Authorization": f"Bearer {BOOTSTRAP}"}
MODEL = "llama-3.1-8b-instant"
# What the scripted provider's "ok reply" costs: 5 prompt tokens and 2 completion tokens.
TURN_NANOS = round((estimate_cost(MODEL, Usage(5, 2, 7), "scripted") or 0) * 1e9)


@pytest.fixture
def provider() -> ScriptedProvider:
    return ScriptedProvider()


@pytest.fixture
def client(tmp_path: Path, provider: ScriptedProvider) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, api_keys=BOOTSTRAP)
    with app_client(settings, provider) as test_client:
        goal = {"id": "support", "name": "Support", "instructions": "Help."}
        assert test_client.post("/v1/goals/", json=goal, headers=ADMIN).status_code == 201
        yield test_client


def _key(client: TestClient, name: str, **limits: Any) -> dict[str, str]:
    made = client.post("/v1/keys/", json={"name": name, "role": "client", **limits}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['secret']}"}


def _conversation(client: TestClient, headers: dict[str, str], goal: str = "support") -> str:
    made = client.post("/v1/conversations/", json={"goal_id": goal}, headers=headers)
    assert made.status_code == 201, made.text
    conversation_id: str = made.json()["id"]
    return conversation_id


def _say(client: TestClient, conversation_id: str, headers: dict[str, str]) -> Any:
    return client.post(
        f"/v1/conversations/{conversation_id}/messages", json={"content": "hi"}, headers=headers
    )


def test_each_reply_is_charged_to_the_key_that_asked_and_shown_with_the_key(
    client: TestClient,
) -> None:
    assert TURN_NANOS > 0
    shop, other = _key(client, "shop"), _key(client, "other")
    conversation = _conversation(client, shop)
    for _ in range(3):
        assert _say(client, conversation, shop).status_code == 200
    assert _say(client, _conversation(client, other), other).status_code == 200
    listed = {k["name"]: k for k in client.get("/v1/keys/", headers=ADMIN).json()["items"]}
    assert listed["shop"]["spend"]["usd"] == pytest.approx(3 * TURN_NANOS / 1e9, abs=1e-12)
    assert listed["other"]["spend"]["usd"] == pytest.approx(TURN_NANOS / 1e9, abs=1e-12)
    assert listed["shop"]["spend"]["remaining_usd"] is None  # no budget
    one = client.get("/v1/keys/shop", headers=ADMIN).json()
    assert one["spend"] == listed["shop"]["spend"]
    assert one["budget_period"] == "month"
    now = datetime.now(UTC)
    start = datetime.fromisoformat(one["spend"]["period_start"])
    assert start == BudgetPeriod.MONTH.start(now)
    detail = client.get(f"/v1/conversations/{conversation}", headers=shop).json()
    assert detail["tokens_used"] == 21
    assert detail["cost_usd"] == pytest.approx(3 * TURN_NANOS / 1e9, abs=1e-12)


def test_a_key_past_its_budget_is_refused_before_any_llm_call_on_every_channel(
    client: TestClient, provider: ScriptedProvider
) -> None:
    """Two turns spend the budget; the third is refused with 429 budget_exceeded, when the
    period resets and Retry-After, and the LLM is not asked: nothing is stored for it."""
    budget = 1.5 * TURN_NANOS / 1e9
    shop = _key(client, "shop", budget_usd=budget, budget_period="day", rpm=1000)
    made = client.get("/v1/keys/shop", headers=ADMIN).json()
    assert (made["budget_usd"], made["budget_period"], made["rpm"]) == (budget, "day", 1000)
    conversation = _conversation(client, shop)
    assert _say(client, conversation, shop).status_code == 200
    assert _say(client, conversation, shop).status_code == 200  # under budget when it began
    calls = len(provider.calls)

    refused = _say(client, conversation, shop)
    assert refused.status_code == 429
    body = refused.json()["error"]
    assert body["code"] == "budget_exceeded"
    resets = BudgetPeriod.DAY.end(datetime.now(UTC))
    assert body["details"] == [{"resets_at": resets.isoformat().replace("+00:00", "Z")}]
    retry_after = int(refused.headers["Retry-After"])
    assert 0 < retry_after <= 86_400

    streamed = client.post(
        f"/v1/conversations/{conversation}/messages",
        json={"content": "hi", "stream": True},
        headers=shop,
    )
    assert streamed.status_code == 429
    assert streamed.json()["error"]["code"] == "budget_exceeded"
    assert streamed.headers["Retry-After"]

    with client.websocket_connect(f"/v1/conversations/{conversation}/ws", headers=shop) as socket:
        socket.send_json({"type": "message", "content": "hi"})
        frame = socket.receive_json()
        assert frame["type"] == "error"
        assert frame["code"] == "budget_exceeded"
        assert frame["retry_after"] > 0
        socket.send_json({"type": "ping"})  # the socket stays open
        assert socket.receive_json() == {"type": "pong"}

    assert len(provider.calls) == calls
    detail = client.get(f"/v1/conversations/{conversation}", headers=shop).json()
    assert detail["turns"] == 2
    spend = client.get("/v1/keys/shop", headers=ADMIN).json()["spend"]
    assert spend["remaining_usd"] == 0
    # Another key is not touched by this one's budget.
    other = _key(client, "other")
    assert _say(client, _conversation(client, other), other).status_code == 200


def test_a_goal_budget_per_conversation_escalates_it_with_reason_budget(
    client: TestClient, provider: ScriptedProvider
) -> None:
    goal = {
        "id": "capped",
        "name": "Capped",
        "instructions": "Help.",
        "escalation": {"budget_tokens": 10},
    }
    assert client.post("/v1/goals/", json=goal, headers=ADMIN).status_code == 201
    conversation = _conversation(client, ADMIN, "capped")
    assert _say(client, conversation, ADMIN).status_code == 200  # 7 tokens
    assert _say(client, conversation, ADMIN).status_code == 200  # 14: reached
    calls = len(provider.calls)
    escalated = client.post(
        f"/v1/conversations/{conversation}/messages",
        json={"content": "hi", "stream": True},
        headers=ADMIN,
    )
    events = parse_sse(escalated.text)
    assert [name for name, _ in events] == ["accepted", "escalated"]
    assert events[-1][1]["reason"] == "budget"
    assert len(provider.calls) == calls
    detail = client.get(f"/v1/conversations/{conversation}", headers=ADMIN).json()
    assert detail["status"] == "escalated"
    assert detail["escalation"]["reason"] == "budget"
    metrics = client.get("/metrics").text
    assert 'escalations_total{reason="budget"} 1.0' in metrics


def _sample(metrics: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_cost_is_counted_per_key_and_budgets_are_gauges_with_a_capped_key_label(
    tmp_path: Path, provider: ScriptedProvider
) -> None:
    """llm_cost_usd_total{key_name} agrees with the stored spend; keys past the label cap
    (the oldest keep theirs) are folded into "other"; each budgeted key's budget and what is
    left of it are gauges read from the store."""
    settings = make_settings(tmp_path, api_keys=BOOTSTRAP, metrics_key_label_limit=2)
    with app_client(settings, provider) as client:
        goal = {"id": "support", "name": "Support", "instructions": "Help."}
        assert client.post("/v1/goals/", json=goal, headers=ADMIN).status_code == 201
        shop = _key(client, "shop", budget_usd=0.001)
        late = _key(client, "late")
        for headers in (shop, shop, late):
            assert _say(client, _conversation(client, headers), headers).status_code == 200
        metrics = client.get("/metrics").text
    spent = 2 * TURN_NANOS / 1e9
    assert _sample(metrics, "llm_cost_usd_total", key_name="shop") == pytest.approx(spent)
    assert _sample(metrics, "llm_cost_usd_total", key_name="late") is None
    assert _sample(metrics, "llm_cost_usd_total", key_name="other") == pytest.approx(
        TURN_NANOS / 1e9
    )
    assert _sample(metrics, "api_key_budget_usd", key_name="shop") == pytest.approx(0.001)
    assert _sample(metrics, "api_key_budget_remaining_usd", key_name="shop") == pytest.approx(
        0.001 - spent
    )
    assert _sample(metrics, "api_key_budget_usd", key_name="late") is None  # no budget


def test_a_key_past_its_tokens_a_minute_waits_on_every_channel(
    client: TestClient, provider: ScriptedProvider
) -> None:
    """Each reply's tokens count against the key's tpm (7 a turn here): once they pass
    it, the next turn is refused with 429 too_many_tokens and Retry-After, before any LLM
    call; a key without a tpm is not held."""
    shop = _key(client, "shop", tpm=10)
    made = client.get("/v1/keys/shop", headers=ADMIN).json()
    assert made["tpm"] == 10
    conversation = _conversation(client, shop)
    assert _say(client, conversation, shop).status_code == 200  # 7 of 10
    assert _say(client, conversation, shop).status_code == 200  # 14: over, counted after
    calls = len(provider.calls)
    refused = _say(client, conversation, shop)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_tokens"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    with client.websocket_connect(f"/v1/conversations/{conversation}/ws", headers=shop) as ws:
        ws.send_json({"type": "message", "content": "hi"})
        frame = ws.receive_json()
        assert (frame["type"], frame["code"]) == ("error", "too_many_tokens")
        assert frame["retry_after"] >= 1
    assert len(provider.calls) == calls
    other = _key(client, "other")
    for _ in range(3):
        assert _say(client, _conversation(client, other), other).status_code == 200


@pytest.mark.parametrize(
    "database",
    ["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.integration])],
)
def test_a_spent_budget_stops_the_key_on_every_replica(tmp_path: Path, database: str) -> None:
    """Two replicas on one database: what the key spent through one is what the other
    reads, so the other refuses it too; the stored spend is the stored usage priced."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    if database == "postgresql":
        url = asyncio.run(postgres_url())
    settings = make_settings(tmp_path, api_keys=BOOTSTRAP, database_url=url)
    with (
        app_client(settings, ScriptedProvider()) as one,
        app_client(settings, ScriptedProvider()) as two,
    ):
        goal = {"id": "support", "name": "Support", "instructions": "Help."}
        assert one.post("/v1/goals/", json=goal, headers=ADMIN).status_code == 201
        shop = _key(one, "shop", budget_usd=2.5 * TURN_NANOS / 1e9)
        conversation = _conversation(two, shop)
        for replica in (one, two, one):
            assert _say(replica, conversation, shop).status_code == 200
        for replica in (one, two):
            refused = _say(replica, conversation, shop)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "budget_exceeded"
        spend = two.get("/v1/keys/shop", headers=ADMIN).json()["spend"]
        detail = one.get(f"/v1/conversations/{conversation}", headers=ADMIN).json()
    stored = [m["usage"] for m in detail["messages"] if m["role"] == "assistant"]
    priced = sum(
        estimate_cost(
            MODEL,
            Usage(u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]),
            "scripted",
        )
        or 0.0
        for u in stored
    )
    assert len(stored) == 3
    assert spend["usd"] == pytest.approx(priced, abs=1e-9)
