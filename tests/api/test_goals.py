from fastapi.testclient import TestClient

GOAL = {"name": "Customer Support", "instructions": "Help customers with their orders."}


def test_create_goal_fills_defaults_and_derives_the_id(client: TestClient) -> None:
    """Only name and instructions are required; the id comes from the name."""
    response = client.post("/v1/goals/", json=GOAL)
    assert response.status_code == 201
    body = response.json()
    assert body["id"] == "customer-support"
    assert body["model"] is None
    assert body["escalation"] == {
        "max_turns": 20,
        "trigger_phrases": ["human", "agent"],
        "on_llm_failure": True,
        "max_llm_failures": 3,
        "budget_tokens": None,
        "budget_usd": None,
    }


def test_goal_crud_round_trip(client: TestClient) -> None:
    """Create, read, list, partially update and delete a goal."""
    client.post("/v1/goals/", json={**GOAL, "id": "support", "model": "llama-3.3-70b-versatile"})
    assert client.get("/v1/goals/support").json()["model"] == "llama-3.3-70b-versatile"
    assert [g["id"] for g in client.get("/v1/goals/").json()["items"]] == ["support"]

    updated = client.patch(
        "/v1/goals/support", json={"name": "Support", "escalation": {"max_turns": 3}}
    ).json()
    assert updated["name"] == "Support"
    assert updated["instructions"] == GOAL["instructions"]
    assert updated["escalation"]["max_turns"] == 3
    assert updated["escalation"]["trigger_phrases"] == ["human", "agent"]
    assert updated["updated_at"] > updated["created_at"]

    cleared = client.patch("/v1/goals/support", json={"model": None}).json()
    assert cleared["model"] is None

    assert client.delete("/v1/goals/support").status_code == 204
    assert client.get("/v1/goals/support").status_code == 404


def test_duplicate_goal_id_is_a_conflict(client: TestClient) -> None:
    client.post("/v1/goals/", json=GOAL)
    response = client.post("/v1/goals/", json=GOAL)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "goal_exists"


def test_invalid_goal_id_names_the_field(client: TestClient) -> None:
    response = client.post("/v1/goals/", json={**GOAL, "id": "Not A Slug"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert "body.id" in error["message"]


def test_name_without_slug_characters_needs_an_explicit_id(client: TestClient) -> None:
    response = client.post("/v1/goals/", json={**GOAL, "name": "???"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_goal_id"


def test_patch_refuses_null_for_required_fields(client: TestClient) -> None:
    """A partial update may leave name out, but may not blank it."""
    client.post("/v1/goals/", json=GOAL)
    response = client.patch("/v1/goals/customer-support", json={"name": None})
    assert response.status_code == 422
    assert "body.name" in response.json()["error"]["message"]
    assert client.get("/v1/goals/customer-support").json()["name"] == GOAL["name"]


def test_goal_with_conversations_cannot_be_deleted(client: TestClient) -> None:
    client.post("/v1/goals/", json=GOAL)
    client.post("/v1/conversations/", json={"goal_id": "customer-support"})
    response = client.delete("/v1/goals/customer-support")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "goal_in_use"


def test_unknown_goal_is_404(client: TestClient) -> None:
    for method in ("get", "patch", "delete"):
        kwargs = {"json": {"name": "x"}} if method == "patch" else {}
        response = getattr(client, method)("/v1/goals/nope", **kwargs)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "goal_not_found"


def test_a_token_budget_past_what_the_column_holds_is_refused_not_a_500(
    client: TestClient,
) -> None:
    """Found by schemathesis on PostgreSQL: budget_tokens 6733254858 overflowed the INTEGER
    column (500); SQLite took it. Refused up front on both, at creation and in a patch."""
    goal = {"id": "big", "name": "Big", "instructions": "Help."}
    too_big = {"budget_tokens": 2**31}
    made = client.post("/v1/goals/", json={**goal, "escalation": too_big})
    assert made.status_code == 422
    assert "budget_tokens" in made.json()["error"]["message"]
    assert client.post("/v1/goals/", json=goal).status_code == 201
    patched = client.patch("/v1/goals/big", json={"escalation": too_big})
    assert patched.status_code == 422
    largest = {"budget_tokens": 2**31 - 1}
    assert client.patch("/v1/goals/big", json={"escalation": largest}).status_code == 200
