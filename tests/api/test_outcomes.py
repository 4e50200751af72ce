"""Goal outcomes over the API: a goal says what success is; a conversation ends with the
outcome its client or agent reports (or none), once; an ended conversation can be deleted
by its owner or an admin; a goal's results come from the database and agree with the
metrics counted as the conversations ended."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import app_client, make_settings
from tests.support.metrics import registry_of, total, value

BOOTSTRAP = "bootstrap-secret"
ADMIN = {"Authorization": f"Bearer {BOOTSTRAP}"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, api_keys=BOOTSTRAP)
    with app_client(settings) as test_client:
        goal = {
            "id": "support",
            "name": "Support",
            "instructions": "Help.",
            "success_criteria": "The customer's order question is answered.",
        }
        made = test_client.post("/v1/goals/", json=goal, headers=ADMIN)
        assert made.status_code == 201, made.text
        yield test_client


def _key(client: TestClient, name: str, role: str) -> dict[str, str]:
    made = client.post("/v1/keys/", json={"name": name, "role": role}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['secret']}"}


def _conversation(client: TestClient, caller: dict[str, str], messages: int = 1) -> str:
    made = client.post("/v1/conversations/", json={"goal_id": "support"}, headers=caller)
    conversation: str = made.json()["id"]
    for n in range(messages):
        turn = client.post(
            f"/v1/conversations/{conversation}/messages",
            json={"content": f"where is order {n}?"},
            headers=caller,
        )
        assert turn.status_code == 200, turn.text
    return conversation


def _post(client: TestClient, path: str, caller: dict[str, str], body: Any = None) -> Any:
    return client.post(f"/v1/conversations/{path}", json=body, headers=caller)


def test_a_goal_says_what_success_is_and_judging_needs_it(client: TestClient) -> None:
    goal = client.get("/v1/goals/support", headers=ADMIN).json()
    assert goal["success_criteria"] == "The customer's order question is answered."
    assert goal["judge"] == {"enabled": False, "sample_rate": 1.0}
    judged = client.patch(
        "/v1/goals/support", json={"judge": {"enabled": True, "sample_rate": 0.5}}, headers=ADMIN
    )
    assert judged.status_code == 200, judged.text
    assert judged.json()["judge"] == {"enabled": True, "sample_rate": 0.5}
    blank = client.patch("/v1/goals/support", json={"success_criteria": None}, headers=ADMIN)
    assert blank.status_code == 422  # it judges: criteria it needs
    made = client.post(
        "/v1/goals/",
        json={"id": "blind", "name": "Blind", "instructions": "x", "judge": {"enabled": True}},
        headers=ADMIN,
    )
    assert made.status_code == 422
    assert "success_criteria" in made.json()["error"]["message"]
    for bad in ({"judge": {"sample_rate": 1.5}}, {"judge": None}, {"success_criteria": ""}):
        refused = client.patch("/v1/goals/support", json=bad, headers=ADMIN)
        assert refused.status_code == 422, bad
    after = client.get("/v1/goals/support", headers=ADMIN).json()
    assert after["judge"] == {"enabled": True, "sample_rate": 0.5}
    assert after["success_criteria"] == goal["success_criteria"]


def test_a_close_records_the_outcome_the_client_reports_once(client: TestClient) -> None:
    shop = _key(client, "shop", "client")
    conversation = _conversation(client, shop, messages=2)
    refused = _post(client, f"{conversation}/close", shop, {"outcome": "delighted"})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_request"
    still = client.get(f"/v1/conversations/{conversation}", headers=shop).json()
    assert (still["status"], still["ended_at"], still["outcome"]) == ("active", None, None)

    closed = _post(client, f"{conversation}/close", shop, {"outcome": "achieved"})
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert (body["status"], body["outcome"], body["outcome_source"]) == (
        "completed",
        "achieved",
        "client",
    )
    assert body["ended_at"] is not None
    assert body["evaluation"] is None
    again = _post(client, f"{conversation}/close", shop, {"outcome": "not_achieved"})
    assert again.status_code == 409
    after = client.get(f"/v1/conversations/{conversation}", headers=shop).json()
    assert after["outcome"] == "achieved"


def test_an_agent_ending_a_handoff_reports_its_outcome_returning_it_cannot(
    client: TestClient,
) -> None:
    shop, ann = _key(client, "shop", "client"), _key(client, "ann", "agent")
    conversations = []
    for _ in range(2):
        conversation = _conversation(client, shop)
        assert _post(client, f"{conversation}/escalate", shop, {}).status_code == 200
        assert _post(client, f"{conversation}/assign", ann).status_code == 200
        conversations.append(conversation)
    mixed = _post(
        client, f"{conversations[0]}/resolve", ann, {"return_to_bot": True, "outcome": "achieved"}
    )
    assert mixed.status_code == 422
    held = client.get(f"/v1/conversations/{conversations[0]}", headers=ann).json()
    assert held["handoff"]["state"] == "assigned"
    done = _post(
        client,
        f"{conversations[1]}/resolve",
        ann,
        {"return_to_bot": False, "outcome": "not_achieved"},
    )
    assert done.status_code == 200, done.text
    assert (done.json()["outcome"], done.json()["outcome_source"]) == ("not_achieved", "agent")


def test_an_ended_conversation_is_deleted_by_its_owner_or_an_admin_only(
    client: TestClient,
) -> None:
    shop, other = _key(client, "shop", "client"), _key(client, "other", "client")
    ann = _key(client, "ann", "agent")
    conversation, second = _conversation(client, shop), _conversation(client, shop)
    early = client.delete(f"/v1/conversations/{conversation}", headers=shop)
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "conversation_open"
    for ended in (conversation, second):
        assert _post(client, f"{ended}/close", shop).status_code == 200
    assert client.delete(f"/v1/conversations/{conversation}", headers=other).status_code == 404
    assert client.delete(f"/v1/conversations/{conversation}", headers=ann).status_code == 403
    assert client.get(f"/v1/conversations/{conversation}", headers=shop).status_code == 200
    gone = client.delete(f"/v1/conversations/{conversation}", headers=shop)
    assert gone.status_code == 204
    assert client.get(f"/v1/conversations/{conversation}", headers=shop).status_code == 404
    assert client.delete(f"/v1/conversations/{conversation}", headers=shop).status_code == 404
    assert client.delete(f"/v1/conversations/{second}", headers=ADMIN).status_code == 204
    listed = client.get("/v1/conversations/", headers=shop).json()["items"]
    assert listed == []
    metrics = registry_of(client)
    assert value(metrics, "conversations_deleted_total", reason="request") == 2
    assert value(metrics, "conversations_deleted_total", reason="retention") == 0
    # What was counted as it ended stays counted.
    by_client = {"goal_id": "support", "outcome": "unknown", "source": "client"}
    assert value(metrics, "conversations_ended_total", **by_client, escalated="false") == 2


def test_a_goals_results_come_from_the_database_and_agree_with_the_metrics(
    client: TestClient,
) -> None:
    shop, ann = _key(client, "shop", "client"), _key(client, "ann", "agent")
    plan = [(1, "achieved"), (3, "achieved"), (2, "not_achieved"), (1, None), (2, "abandoned")]
    for messages, outcome in plan:
        conversation = _conversation(client, shop, messages)
        body = {"outcome": outcome} if outcome else None
        assert _post(client, f"{conversation}/close", shop, body).status_code == 200
    handed = _conversation(client, shop)
    assert _post(client, f"{handed}/escalate", shop, {}).status_code == 200
    _post(client, f"{handed}/assign", ann)
    _post(client, f"{handed}/resolve", ann, {"return_to_bot": False, "outcome": "achieved"})
    _conversation(client, shop)  # still open

    results = client.get("/v1/goals/support/outcomes", headers=ann)
    assert results.status_code == 200, results.text
    body = results.json()
    assert (body["ended"], body["judging"]) == (6, 0)
    counts = {outcome: stats["count"] for outcome, stats in body["outcomes"].items()}
    assert counts == {"achieved": 3, "not_achieved": 1, "abandoned": 1, "unknown": 1}
    assert body["success_ratio"] == 3 / 4
    assert body["containment"] == 5 / 6
    assert body["outcomes"]["achieved"]["median_turns"] == 1
    assert body["outcomes"]["not_achieved"]["median_turns"] == 2

    metrics = registry_of(client)
    for outcome, count in counts.items():
        counted = total(metrics, "conversations_ended_total", goal_id="support", outcome=outcome)
        assert counted == count, outcome
        turns = value(metrics, "conversation_ended_turns_count", goal_id="support", outcome=outcome)
        assert turns == count, outcome

    assert client.get("/v1/goals/support/outcomes", headers=shop).status_code == 403
    assert client.get("/v1/goals/nope/outcomes", headers=ann).status_code == 404
    later = client.get(
        "/v1/goals/support/outcomes", params={"since": "2999-01-01T00:00:00Z"}, headers=ann
    ).json()
    assert (later["ended"], later["success_ratio"]) == (0, None)
    naive = client.get(
        "/v1/goals/support/outcomes", params={"since": "2026-01-01T00:00:00"}, headers=ann
    )
    assert naive.status_code == 422
