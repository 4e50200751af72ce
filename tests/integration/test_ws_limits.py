"""WebSocket frames a browser never sends, through ``parley serve``: an oversized frame and
invalid UTF-8 each get a clean close with the protocol's code, and the server stays well."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.api.helpers import start_conversation
from tests.support.serve import serve, serve_process

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


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_flood_of_large_frames_during_a_reply_leaves_the_servers_memory_bounded(
    tmp_path: Path,
) -> None:
    """120 valid 1 MB frames in one reply's time grew the server by 116-131 MB, not given
    back: frames were read ahead into an unbounded queue. Now a few frames are read ahead
    and the rest wait in TCP (backpressure); every frame still gets its answer."""
    env = {"PARLEY_SIM_TTFT_SECONDS": "1", "PARLEY_LOG_LEVEL": "WARNING"}
    with serve_process(tmp_path, env=env) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
            conversation_id = await start_conversation(http)
            await http.get("/metrics")  # warm: the first scrape's own allocations
        pid = served.process.pid
        before = _rss_mib(pid)
        big = json.dumps({"type": "message", "content": "x" * 1_000_000})
        ws_url = served.url.replace("http", "ws", 1) + f"/v1/conversations/{conversation_id}/ws"
        peak = before
        async with asyncio.timeout(120), connect(ws_url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "message", "content": "a slow reply"}))
            sender = asyncio.ensure_future(_send_all(ws, [big] * 120))
            answers = 0
            while answers < 121:
                frame = json.loads(await ws.recv())
                peak = max(peak, _rss_mib(pid))
                if frame["type"] in ("done", "error", "escalated"):
                    answers += 1
            await sender
    assert peak - before < 40, (before, peak)


async def _send_all(ws: ClientConnection, frames: list[str]) -> None:
    for frame in frames:
        await ws.send(frame)
