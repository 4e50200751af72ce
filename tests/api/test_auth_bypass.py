"""Attempts to get past the API keys: every one refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from parley.app import create_app
from tests.conftest import app_client, make_settings
from tests.support.live_server import LiveServer

KEY = "Sekret-Key-1"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(make_settings(tmp_path, api_keys=KEY)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {KEY.lower()}"},
        {"Authorization": f"Bearer {KEY.upper()}"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": f"Bearer{KEY}"},
        {"Authorization": f"Bearer {KEY[:-1]}"},
        {"Authorization": f"Bearer {KEY}x"},
        {"Authorization": "Bearer Sekret%2DKey%2D1"},
        {"Authorization": "Bearer "},
        {"X-API-Key": ""},
        {"X-API-Key": KEY.lower()},
        {"X-Api-Key": f" {KEY}x"},
        {"Cookie": f"api_key={KEY}"},
    ],
)
def test_wrong_or_mangled_keys_are_refused(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/v1/goals/", headers=headers)
    assert response.status_code == 401, headers
    assert response.json()["error"]["type"] == "unauthorized"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/goals"),
        ("GET", "/v1/goals/"),
        ("GET", "/V1/goals/"),
        ("GET", "/v1//goals/"),
        ("GET", "/v1/%67oals/"),
        ("GET", "/v1/goals/%2e%2e/conversations/"),
        ("POST", "/v1/goals/"),
        ("PATCH", "/v1/goals/x"),
        ("DELETE", "/v1/goals/x"),
        ("OPTIONS", "/v1/goals/"),
        ("HEAD", "/v1/goals/"),
        ("GET", "/v1/conversations/?api_key=" + KEY),
    ],
)
def test_no_spelling_of_a_path_or_method_reaches_data_without_a_key(
    client: TestClient, method: str, path: str
) -> None:
    response = client.request(method, path, follow_redirects=False)
    assert response.status_code in (401, 404, 405, 307), (method, path)
    if response.status_code == 307:  # a redirect to the canonical path, still guarded
        assert client.get(response.headers["location"]).status_code == 401
    assert "items" not in response.text


def test_the_key_works_as_given(client: TestClient) -> None:
    assert client.get("/v1/goals/", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert client.get("/v1/goals/", headers={"authorization": f"bearer {KEY}"}).status_code == 200


@pytest.mark.integration
async def test_a_websocket_without_the_key_is_refused(tmp_path: Path) -> None:
    with LiveServer(create_app(make_settings(tmp_path, api_keys=KEY))) as live:
        url = f"{live.ws_url}/v1/conversations/00000000-0000-0000-0000-000000000000/ws"
        attempts: list[dict[str, Any]] = [
            {},
            {"subprotocols": ["parley", "bearer.wrong"]},
            {"additional_headers": {"Authorization": f"Bearer {KEY.lower()}"}},
            {"additional_headers": {"X-API-Key": ""}},
        ]
        for attempt in attempts:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url + f"?api_key={KEY}", **attempt):
                    pass
            assert refused.value.response.status_code == 403, attempt
