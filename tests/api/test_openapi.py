import re

import pytest
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


def test_422_is_documented_in_the_error_shape_parley_answers_with(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    refs = [
        op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
        for item in spec["paths"].values()
        for op in item.values()
        if "422" in op["responses"]
    ]
    assert refs
    assert set(refs) == {"#/components/schemas/ErrorBody"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_the_spec_has_security_schemes_for_the_api_keys(client: TestClient) -> None:
    """So that Swagger's Authorize button works; /v1 operations name them."""
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, item in spec["paths"].items():
        for op in item.values():
            expected: list[dict[str, list[str]]] | None = (
                [{"bearer": []}, {"apiKey": []}] if path.startswith("/v1/") else None
            )
            assert op.get("security") == expected, path


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_everything_from_parley_itself(client: TestClient, page: str) -> None:
    """Offline, or where CDNs are blocked, the docs still work: every script, style and
    icon the page names is served by Parley."""
    html = client.get(page)
    assert html.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text) + re.findall(
        r"url: '([^']+)'", html.text
    )
    assert assets, html.text
    for asset in assets:
        assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
        fetched = client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 1000 or asset == "/openapi.json", asset


def test_the_root_says_where_everything_is(client: TestClient) -> None:
    """`make run` prints http://127.0.0.1:8000, which answered 404."""
    index = client.get("/")
    assert index.status_code == 200
    for path in ("/docs", "/metrics", "/healthz", "/readyz", "/openapi.json"):
        assert path in index.json().values()
        assert client.get(path).status_code == 200, path
