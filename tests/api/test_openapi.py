from fastapi.testclient import TestClient


def test_every_route_has_a_one_line_summary(client: TestClient) -> None:
    """Each operation's summary is its docstring's one line, not the function name."""
    spec = client.get("/openapi.json").json()
    operations = [
        (path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]
    assert len(operations) >= 12
    for path, method, op in operations:
        summary = op.get("summary", "")
        assert summary.endswith("."), (method, path, summary)
        assert "\n" not in summary, (method, path, summary)


def test_spec_lists_the_public_routes(client: TestClient) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {
        "/healthz",
        "/readyz",
        "/v1/goals/",
        "/v1/goals/{goal_id}",
        "/v1/conversations/",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations/{conversation_id}/messages",
        "/v1/conversations/{conversation_id}/escalate",
        "/v1/conversations/{conversation_id}/close",
    } <= paths
