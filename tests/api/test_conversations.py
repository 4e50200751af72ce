import uuid

from fastapi.testclient import TestClient

from tests.api.helpers import make_conversation, make_goal


def test_create_conversation_for_a_goal(client: TestClient) -> None:
    make_goal(client)
    response = client.post(
        "/v1/conversations/", json={"goal_id": "support", "metadata": {"channel": "web"}}
    )
    assert response.status_code == 201
    body = response.json()
    uuid.UUID(body["id"])
    assert body["goal_id"] == "support"
    assert body["status"] == "active"
    assert body["metadata"] == {"channel": "web"}
    assert "created_at" in body


def test_conversation_for_unknown_goal_is_404(client: TestClient) -> None:
    response = client.post("/v1/conversations/", json={"goal_id": "nope"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "goal_not_found"


def test_get_conversation_includes_its_messages(client: TestClient) -> None:
    make_goal(client)
    conversation_id = make_conversation(client)
    client.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "Hi"})
    body = client.get(f"/v1/conversations/{conversation_id}").json()
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][0]["content"] == "Hi"
    assert body["turns"] == 1


def test_unknown_and_malformed_conversation_ids(client: TestClient) -> None:
    """A well-formed id that does not exist is 404; a malformed one is 422 naming it."""
    missing = client.get(f"/v1/conversations/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "conversation_not_found"
    malformed = client.get("/v1/conversations/not-a-uuid")
    assert malformed.status_code == 422
    assert "conversation_id" in malformed.json()["error"]["message"]


def test_list_filters_and_paginates(client: TestClient) -> None:
    make_goal(client, "a")
    make_goal(client, "b")
    ids = [make_conversation(client, "a") for _ in range(3)] + [make_conversation(client, "b")]
    client.post(f"/v1/conversations/{ids[0]}/escalate", json={"reason": "manual"})

    first = client.get("/v1/conversations/", params={"limit": 2}).json()
    second = client.get(
        "/v1/conversations/", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    assert second["next_cursor"] is None
    listed = [c["id"] for c in first["items"] + second["items"]]
    assert listed == list(reversed(ids))

    by_goal = client.get("/v1/conversations/", params={"goal_id": "a"}).json()["items"]
    assert {c["goal_id"] for c in by_goal} == {"a"}
    assert len(by_goal) == 3
    escalated = client.get("/v1/conversations/", params={"status": "escalated"}).json()["items"]
    assert [c["id"] for c in escalated] == [ids[0]]


def test_list_rejects_bad_filters_and_cursors(client: TestClient) -> None:
    assert client.get("/v1/conversations/", params={"status": "weird"}).status_code == 422
    assert client.get("/v1/conversations/", params={"limit": 0}).status_code == 422
    response = client.get("/v1/conversations/", params={"cursor": "garbage"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_cursor"


def test_close_ends_it_once_and_closing_again_is_a_conflict_that_changes_nothing(
    client: TestClient,
) -> None:
    make_goal(client)
    conversation_id = make_conversation(client)
    closed = client.post(f"/v1/conversations/{conversation_id}/close")
    assert closed.status_code == 200
    assert closed.json()["status"] == "completed"
    assert (closed.json()["outcome"], closed.json()["outcome_source"]) == ("unknown", "client")
    again = client.post(f"/v1/conversations/{conversation_id}/close", json={"outcome": "achieved"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conversation_closed"
    after = client.get(f"/v1/conversations/{conversation_id}").json()
    assert (after["outcome"], after["ended_at"]) == ("unknown", closed.json()["ended_at"])
    message = client.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "hi"})
    assert message.status_code == 409
    assert message.json()["error"]["code"] == "conversation_closed"


def test_manual_escalation_stops_the_assistant(client: TestClient) -> None:
    """Escalated: the reason and note are kept; further messages are stored for the human
    agent (202), the LLM is not asked."""
    make_goal(client)
    conversation_id = make_conversation(client)
    response = client.post(
        f"/v1/conversations/{conversation_id}/escalate",
        json={"reason": "user_request", "note": "asked twice"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "escalated"
    assert body["escalation"]["reason"] == "user_request"
    assert body["escalation"]["note"] == "asked twice"

    again = client.post(f"/v1/conversations/{conversation_id}/escalate", json={})
    assert again.status_code == 409
    message = client.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "hi"})
    assert message.status_code == 202
    held = message.json()
    assert (held["held_for_agent"], held["reply"]) == (True, None)
    assert held["conversation"]["handoff"]["state"] == "waiting"
    assert held["user_message"]["content"] == "hi"


def test_escalation_reason_is_a_closed_set(client: TestClient) -> None:
    """Free text and policy-only reasons are refused as reasons."""
    make_goal(client)
    conversation_id = make_conversation(client)
    for reason in ("because I said so", "max_turns"):
        response = client.post(
            f"/v1/conversations/{conversation_id}/escalate", json={"reason": reason}
        )
        assert response.status_code == 422
        assert "body.reason" in response.json()["error"]["message"]


def test_a_long_conversation_is_read_a_page_at_a_time(client: TestClient) -> None:
    """The latest messages first, oldest first within a page; messages_next_before pages
    back until there is nothing more (a conversation never comes back unbounded)."""
    make_goal(client, max_turns=100)
    conversation_id = make_conversation(client)
    for index in range(3):
        client.post(f"/v1/conversations/{conversation_id}/messages", json={"content": f"m{index}"})
    url = f"/v1/conversations/{conversation_id}"
    seen: list[list[int]] = []
    before = None
    while True:
        params = {"messages_limit": 2, **({"messages_before": before} if before else {})}
        page = client.get(url, params=params).json()
        seen.append([m["seq"] for m in page["messages"]])
        before = page["messages_next_before"]
        if before is None:
            break
    assert seen == [[5, 6], [3, 4], [1, 2]]
    whole = client.get(url).json()
    assert [m["seq"] for m in whole["messages"]] == [1, 2, 3, 4, 5, 6]
    assert whole["messages_next_before"] is None
    assert client.get(url, params={"messages_limit": 1001}).status_code == 422
