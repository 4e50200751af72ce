"""WebSocket frames a browser never sends, through ``parley serve``: an oversized frame and
invalid UTF-8 each get a clean close with the protocol's code, and the server stays well."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.api.helpers import start_conversation
from tests.support.serve import serve

pytestmark = pytest.mark.integration


async def test_oversized_and_invalid_utf8_frames_are_closed_cleanly(tmp_path: Path) -> None:
    with serve(tmp_path, env={"PARLEY_MAX_BODY_BYTES": "4096"}) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            conversation_id = await start_conversation(http)
            ws_url = url.replace("http", "ws", 1) + f"/v1/conversations/{conversation_id}/ws"
            cases: list[tuple[str | bytes, bool, int]] = [
                ("x" * 10_000, True, 1009),  # message too big
                (b"\xff\xfe not utf-8", True, 1007),  # invalid frame payload data
            ]
            for frame, text, code in cases:
                async with connect(ws_url) as ws:
                    await ws.send(frame, text=text)
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.recv()
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == code
            async with connect(ws_url) as ws:
                await ws.send(json.dumps({"type": "ping"}))
                assert json.loads(await ws.recv()) == {"type": "pong"}
            assert (await http.get("/healthz")).status_code == 200
