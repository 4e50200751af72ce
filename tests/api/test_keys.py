"""Keys as principals: named keys with a role, made and revoked under /v1/keys, each route's
roles enforced, a client key seeing only its own conversations, and no secret anywhere
but in the answer that made it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from structlog.testing import capture_logs

from parley.api.auth import ROLES_EXTENSION
from tests.conftest import app_client, make_settings

BOOTSTRAP = "bootstrap-secret"
ADMIN = {"Authorization": f"Bearer {BOOTSTRAP}"}
ALL = {"client", "agent", "admin"}
CALLERS = {"client", "admin"}
# Who may call what: a route missing here (or here and gone) fails the matrix test.
EXPECTED_ROLES = {
    ("post", "/v1/goals/"): {"admin"},
    ("get", "/v1/goals/"): ALL,
    ("get", "/v1/goals/{goal_id}"): ALL,
    ("patch", "/v1/goals/{goal_id}"): {"admin"},
    ("delete", "/v1/goals/{goal_id}"): {"admin"},
    ("get", "/v1/goals/{goal_id}/outcomes"): {"agent", "admin"},
    ("post", "/v1/conversations/"): CALLERS,
    ("get", "/v1/conversations/"): ALL,
    ("get", "/v1/conversations/{conversation_id}"): ALL,
    ("delete", "/v1/conversations/{conversation_id}"): CALLERS,
    ("post", "/v1/conversations/{conversation_id}/close"): CALLERS,
    ("post", "/v1/conversations/{conversation_id}/escalate"): CALLERS,
    ("post", "/v1/conversations/{conversation_id}/messages"): ALL,
    ("get", "/v1/handoffs/"): {"agent", "admin"},
    ("post", "/v1/conversations/{conversation_id}/assign"): {"agent", "admin"},
    ("post", "/v1/conversations/{conversation_id}/unassign"): {"agent", "admin"},
    ("post", "/v1/conversations/{conversation_id}/resolve"): {"agent", "admin"},
    ("get", "/v1/conversations/{conversation_id}/events"): ALL,
    ("get", "/v1/handoffs/events"): {"agent", "admin"},
    ("post", "/v1/keys/"): {"admin"},
    ("get", "/v1/keys/"): {"admin"},
    ("get", "/v1/keys/{name}"): {"admin"},
    ("patch", "/v1/keys/{name}"): {"admin"},
    ("post", "/v1/keys/{name}/revoke"): {"admin"},
    ("get", "/v1/me"): ALL,
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    # Every route is called without a key: more refusals than one address may make.
    settings = make_settings(tmp_path, api_keys=BOOTSTRAP, auth_failures_per_minute=0)
    with app_client(settings) as test_client:
        yield test_client


def _make_key(client: TestClient, name: str, role: str) -> dict[str, str]:
    made = client.post("/v1/keys/", json={"name": name, "role": role}, headers=ADMIN)
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['secret']}"}


def _setup(client: TestClient) -> tuple[str, str]:
    goal = {"id": "support", "name": "Support", "instructions": "Help."}
    assert client.post("/v1/goals/", json=goal, headers=ADMIN).status_code == 201
    conversation = client.post("/v1/conversations/", json={"goal_id": "support"}, headers=ADMIN)
    return "support", conversation.json()["id"]


def _call(client: TestClient, method: str, template: str, headers: dict[str, str]) -> int:
    goal_id, conversation_id = "support", "00000000-0000-4000-8000-000000000000"
    path = template.format(goal_id=goal_id, conversation_id=conversation_id, name="nobody")
    bodies: dict[tuple[str, str], Any] = {
        ("post", "/v1/goals/"): {"id": "g2", "name": "G", "instructions": "x"},
        ("patch", "/v1/goals/{goal_id}"): {"name": "renamed"},
        ("post", "/v1/conversations/"): {"goal_id": goal_id},
        ("post", "/v1/conversations/{conversation_id}/escalate"): {},
        ("post", "/v1/conversations/{conversation_id}/messages"): {"content": "hi"},
        ("post", "/v1/keys/"): {"name": "made-in-matrix", "role": "client"},
        ("patch", "/v1/keys/{name}"): {"rpm": 5},
        ("post", "/v1/conversations/{conversation_id}/resolve"): {"return_to_bot": True},
    }
    body = bodies.get((method, template))
    # A live stream is endless: an id it refuses (422) answers past the role check.
    params = {"last_event_id": -1} if template.endswith("/events") else None
    response = client.request(method, path, json=body, headers=headers, params=params)
    return response.status_code


def test_every_route_answers_each_role_as_declared(client: TestClient) -> None:
    """Walked from the OpenAPI schema: 401 with no key, 403 for a role not listed, anything
    else for one listed; and each operation lists its roles under x-parley-roles."""
    spec = client.get("/openapi.json").json()
    operations = {
        (method, path): op
        for path, item in spec["paths"].items()
        if path.startswith("/v1/")
        for method, op in item.items()
    }
    assert set(operations) == set(EXPECTED_ROLES)
    _setup(client)
    keys = {role: _make_key(client, f"{role}-key", role) for role in sorted(ALL)}
    for (method, path), op in sorted(operations.items()):
        allowed = EXPECTED_ROLES[method, path]
        assert set(op[ROLES_EXTENSION]) == allowed, (method, path)
        assert {"401", "403"} <= set(op["responses"]), (method, path)
        assert _call(client, method, path, {}) == 401, (method, path)
        for role, headers in keys.items():
            status = _call(client, method, path, headers)
            if role in allowed:
                assert status not in (401, 403), (method, path, role, status)
            else:
                assert status == 403, (method, path, role, status)


def test_the_websocket_takes_clients_and_admins_but_not_agents(client: TestClient) -> None:
    _, conversation_id = _setup(client)
    agent = _make_key(client, "agent-1", "agent")
    url = f"/v1/conversations/{conversation_id}/ws"
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect(url, headers=agent),
    ):
        pass
    assert refused.value.code == 1008
    with client.websocket_connect(url, headers=ADMIN) as ws:
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_a_client_key_sees_only_the_conversations_it_created(client: TestClient) -> None:
    """Another owner's conversation answers 404 on every channel (ids cannot be probed) and
    takes no message; agents and admins see every one."""
    _setup(client)
    alice = _make_key(client, "alice", "client")
    bob = _make_key(client, "bob", "client")
    agent = _make_key(client, "agent-1", "agent")
    mine = client.post("/v1/conversations/", json={"goal_id": "support"}, headers=alice).json()
    assert mine["owner"] == "alice"
    path = f"/v1/conversations/{mine['id']}"
    assert client.post(f"{path}/messages", json={"content": "hi"}, headers=alice).status_code == 200

    for attempt in (
        client.get(path, headers=bob),
        client.post(f"{path}/messages", json={"content": "intruding"}, headers=bob),
        client.post(f"{path}/messages", json={"content": "sse", "stream": True}, headers=bob),
        client.post(
            f"{path}/messages",
            json={"content": "hi"},  # alice's content and a key: says nothing either
            headers={**bob, "Idempotency-Key": "k"},
        ),
        client.post(f"{path}/close", headers=bob),
        client.post(f"{path}/escalate", json={}, headers=bob),
    ):
        assert attempt.status_code == 404, attempt.text
        assert attempt.json()["error"]["code"] == "conversation_not_found"
    with client.websocket_connect(f"{path}/ws", headers=bob) as ws:
        assert ws.receive_json()["code"] == "conversation_not_found"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4404

    listed = {c["id"] for c in client.get("/v1/conversations/", headers=bob).json()["items"]}
    assert mine["id"] not in listed
    assert {c["id"] for c in client.get("/v1/conversations/", headers=alice).json()["items"]} == {
        mine["id"]
    }
    for everyone in (agent, ADMIN):
        assert client.get(path, headers=everyone).status_code == 200
        ids = {c["id"] for c in client.get("/v1/conversations/", headers=everyone).json()["items"]}
        assert mine["id"] in ids
    stored = client.get(path, headers=alice).json()
    assert stored["status"] == "active"
    assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == ["hi"]


def test_a_revoked_key_stops_at_once_and_its_name_is_never_reused(client: TestClient) -> None:
    key = _make_key(client, "short-lived", "client")
    assert client.get("/v1/goals/", headers=key).status_code == 200
    revoked = client.post("/v1/keys/short-lived/revoke", headers=ADMIN)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert client.get("/v1/goals/", headers=key).status_code == 401
    again = client.post("/v1/keys/", json={"name": "short-lived", "role": "client"}, headers=ADMIN)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "key_exists"
    assert client.post("/v1/keys/nobody/revoke", headers=ADMIN).status_code == 404


def test_a_keys_limits_change_in_place_and_hold_from_its_next_request(
    client: TestClient,
) -> None:
    made = client.post(
        "/v1/keys/", json={"name": "shop", "role": "client", "rpm": 2}, headers=ADMIN
    )
    key = {"Authorization": f"Bearer {made.json()['secret']}"}
    assert [client.get("/v1/goals/", headers=key).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    lifted = client.patch("/v1/keys/shop", json={"rpm": None, "budget_usd": 5}, headers=ADMIN)
    assert lifted.status_code == 200, lifted.text
    assert (lifted.json()["rpm"], lifted.json()["budget_usd"]) == (None, 5)
    assert lifted.json()["budget_period"] == "month"  # left out: unchanged
    assert all(client.get("/v1/goals/", headers=key).status_code == 200 for _ in range(5))
    for bad in ({"rpm": 0}, {"budget_period": None}, {"role": "admin"}):
        assert client.patch("/v1/keys/shop", json=bad, headers=ADMIN).status_code == 422, bad
    assert client.patch("/v1/keys/nobody", json={"rpm": 5}, headers=ADMIN).status_code == 404
    assert client.patch("/v1/keys/shop", json={"rpm": 9}, headers=key).status_code == 403


@pytest.mark.parametrize("name", ["", "UPPER", "bootstrap-1", "a b", "x" * 64, "-lead"])
def test_a_key_name_must_be_plain(client: TestClient, name: str) -> None:
    made = client.post("/v1/keys/", json={"name": name, "role": "client"}, headers=ADMIN)
    assert made.status_code == 422, made.text


def test_no_secret_reaches_a_log_an_error_or_a_listing(client: TestClient) -> None:
    """The secret is in the answer that made it and nowhere else; logs carry the key's
    name."""
    _setup(client)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        made = client.post("/v1/keys/", json={"name": "ci", "role": "admin"}, headers=ADMIN)
        secret = made.json()["secret"]
        assert re.fullmatch(r"parley_[A-Za-z0-9_-]{43}", secret)
        used = client.post(  # a turn logs its events
            "/v1/conversations/", json={"goal_id": "support"}, headers={"X-API-Key": secret}
        )
        wrong = client.get("/v1/goals/", headers={"X-API-Key": secret + "x"})
        listing = client.get("/v1/keys/", headers=ADMIN)
        one = client.get("/v1/keys/ci", headers=ADMIN)
        client.post("/v1/keys/ci/revoke", headers=ADMIN)
        after = client.get("/v1/goals/", headers={"X-API-Key": secret})
    assert used.status_code == 201
    assert used.json()["owner"] == "ci"
    assert (wrong.status_code, after.status_code) == (401, 401)
    for response in (wrong, listing, one, after):
        assert secret not in response.text
    assert secret not in json.dumps(logs, default=str)
    assert BOOTSTRAP not in json.dumps(logs, default=str)
    names = {log.get("key_name") for log in logs}
    assert "ci" in names
    assert listing.json()["items"][0]["name"] == "ci"
    assert one.json()["last_used_at"] is not None


def test_with_no_key_the_api_is_open_until_the_first_key_is_made(tmp_path: Path) -> None:
    """Development mode: no key at all, anyone is admin. The first key closes it for good
    (revoking every key does not open it again)."""
    with app_client(make_settings(tmp_path)) as client:
        assert client.get("/v1/keys/").status_code == 200
        made = client.post("/v1/keys/", json={"name": "first", "role": "admin"})
        assert made.status_code == 201
        assert client.get("/v1/goals/").status_code == 401
        key = {"X-API-Key": made.json()["secret"]}
        assert client.post("/v1/keys/first/revoke", headers=key).status_code == 200
        assert client.get("/v1/goals/").status_code == 401


def test_production_refuses_to_start_with_no_key(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="no API key exists"),
        app_client(make_settings(tmp_path, env="production")),
    ):
        pass
    with app_client(make_settings(tmp_path, env="production", api_keys=BOOTSTRAP)) as client:
        assert client.get("/v1/goals/").status_code == 401
        assert client.get("/v1/goals/", headers=ADMIN).status_code == 200


def test_an_open_websocket_takes_no_turn_once_its_key_is_revoked(client: TestClient) -> None:
    """The key is checked again at each message frame, not only at the handshake: a
    socket opened before the revocation gets an ``unauthorized`` error and is closed
    (1008), and nothing is stored; a changed limit holds on it from its next frame."""
    _setup(client)
    shop = _make_key(client, "shop", "client")
    made = client.post("/v1/conversations/", json={"goal_id": "support"}, headers=shop)
    conversation = made.json()["id"]
    with client.websocket_connect(f"/v1/conversations/{conversation}/ws", headers=shop) as ws:
        ws.send_json({"type": "message", "content": "first"})
        while ws.receive_json()["type"] != "done":
            pass
        assert client.patch("/v1/keys/shop", json={"rpm": 1}, headers=ADMIN).status_code == 200
        ws.send_json({"type": "message", "content": "within the new limit"})
        while ws.receive_json()["type"] != "done":
            pass
        ws.send_json({"type": "message", "content": "over the new limit"})
        limited = ws.receive_json()
        assert (limited["type"], limited["code"]) == ("error", "too_many_requests")
        assert client.post("/v1/keys/shop/revoke", headers=ADMIN).status_code == 200
        ws.send_json({"type": "message", "content": "after the revocation"})
        refused = ws.receive_json()
        assert (refused["type"], refused["code"]) == ("error", "unauthorized")
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 1008
    stored = client.get(f"/v1/conversations/{conversation}", headers=ADMIN).json()
    user_messages = [m["content"] for m in stored["messages"] if m["role"] == "user"]
    assert user_messages == ["first", "within the new limit"]
