"""A browser can use the API safely: CORS for allowed origins, WebSocket auth it can send
(a subprotocol), and no page from another origin can drive a WebSocket conversation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from parley.app import create_app
from tests.api.helpers import start_conversation
from tests.conftest import app_client, make_settings
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.integration

ALLOWED = "https://chat.example.com"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path, api_keys="sekret", allowed_origins=ALLOWED)
    with LiveServer(create_app(settings)) as live:
        yield live


def _conversation(server: LiveServer) -> str:
    auth = {"Authorization": "Bearer sekret"}
    with httpx.Client(base_url=server.http_url, headers=auth) as http:
        goal = {"id": "g", "name": "G", "instructions": "Help."}
        http.post("/v1/goals/", json=goal).raise_for_status()
        conversation_id: str = http.post("/v1/conversations/", json={"goal_id": "g"}).json()["id"]
        return conversation_id


async def test_a_browser_authenticates_a_websocket_with_the_bearer_subprotocol(
    server: LiveServer,
) -> None:
    """Browsers cannot set headers on a WebSocket; they can offer subprotocols."""
    url = f"{server.ws_url}/v1/conversations/{_conversation(server)}/ws"
    async with connect(
        url,
        subprotocols=[Subprotocol("parley"), Subprotocol("bearer.sekret")],
        origin=Origin(ALLOWED),
    ) as ws:
        assert ws.subprotocol == "parley"  # the key is never echoed back
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}


@pytest.mark.parametrize(
    ("subprotocols", "origin"),
    [
        (["parley", "bearer.wrong"], ALLOWED),
        (["parley"], ALLOWED),
        (["parley", "bearer.sekret"], "https://evil.example.net"),
        (["parley", "bearer.sekret"], "null"),
    ],
)
async def test_a_websocket_without_a_key_or_from_another_origin_is_refused(
    server: LiveServer, subprotocols: list[str], origin: str
) -> None:
    url = f"{server.ws_url}/v1/conversations/{_conversation(server)}/ws"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            url, subprotocols=[Subprotocol(p) for p in subprotocols], origin=Origin(origin)
        ):
            pass
    assert refused.value.response.status_code == 403


async def test_with_auth_off_a_page_from_another_origin_cannot_drive_a_conversation(
    tmp_path: Path,
) -> None:
    with LiveServer(create_app(make_settings(tmp_path))) as live:
        async with httpx.AsyncClient(base_url=live.http_url) as http:
            conversation = await start_conversation(http)
        url = f"{live.ws_url}/v1/conversations/{conversation}/ws"
        with pytest.raises(InvalidStatus):
            async with connect(url, origin=Origin("https://evil.example.net")):
                pass
        same_origin = f"http://127.0.0.1:{live.port}"
        async with connect(url, origin=Origin(same_origin)) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv()) == {"type": "pong"}


def test_cors_answers_allowed_origins_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, allowed_origins=ALLOWED)
    with app_client(settings) as client:
        preflight = {
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        }
        allowed = client.options("/v1/goals/", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ALLOWED
        other = client.options("/v1/goals/", headers={**preflight, "Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in other.headers
        plain = client.get("/v1/goals/", headers={"Origin": ALLOWED})
        assert plain.headers["access-control-allow-origin"] == ALLOWED
