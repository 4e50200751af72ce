"""SIGTERM on ``parley serve`` with turns in flight on SSE and WebSocket: the same for both.

Within ``PARLEY_SHUTDOWN_GRACE_SECONDS`` they finish and are stored; past it each gets a
last error, what was produced is stored as interrupted, and the process exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.api.helpers import start_conversation
from tests.support.serve import Served, serve_process

pytestmark = pytest.mark.integration

# About 40 tokens at 0.1 s each: a reply takes some 4 s to stream.
SLOW = {"PARLEY_SIM_TTFT_SECONDS": "0", "PARLEY_SIM_TOKEN_DELAY_SECONDS": "0.1"}


async def _sse_events(
    http: httpx.AsyncClient, conversation_id: str, first_token: asyncio.Event
) -> list[str]:
    events: list[str] = []
    async with http.stream(
        "POST",
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": "a long answer please", "stream": True},
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
                if events[-1] == "token":
                    first_token.set()
    return events


async def _ws_frames(
    ws: ClientConnection, conversation_id: str, first_token: asyncio.Event
) -> list[dict[str, Any]]:
    await ws.send(json.dumps({"type": "message", "content": "a long answer please"}))
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["type"] not in ("done", "error"):
        frames.append(json.loads(await ws.recv()))
        if frames[-1]["type"] == "token":
            first_token.set()
    return frames


def _stored(database: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT role, status FROM messages ORDER BY conversation_id, seq")
        return [(role, status) for role, status in rows]


async def _terminate_mid_turn(served: Served) -> tuple[list[str], list[dict[str, Any]]]:
    async with httpx.AsyncClient(base_url=served.url, timeout=60) as http:
        sse_conversation = await start_conversation(http)
        ws_conversation = await start_conversation(http)
        url = served.url.replace("http", "ws") + f"/v1/conversations/{ws_conversation}/ws"
        async with asyncio.timeout(60), connect(url) as ws:
            sse_started, ws_started = asyncio.Event(), asyncio.Event()
            sse = asyncio.create_task(_sse_events(http, sse_conversation, sse_started))
            frames = asyncio.create_task(_ws_frames(ws, ws_conversation, ws_started))
            await sse_started.wait()
            await ws_started.wait()
            served.process.send_signal(signal.SIGTERM)
            return await sse, await frames


def _exits(served: Served) -> bool:
    """The process ended after a clean shutdown (uvicorn re-raises SIGTERM once it is done,
    so the exit status is the signal's)."""
    code = served.process.wait(timeout=60)
    return code in (0, -signal.SIGTERM) and "Finished server process" in served.log.read_text()


async def test_turns_in_flight_finish_within_the_grace_on_every_channel(tmp_path: Path) -> None:
    env = {**SLOW, "PARLEY_SHUTDOWN_GRACE_SECONDS": "60"}
    with serve_process(tmp_path, env=env) as served:
        sse, frames = await _terminate_mid_turn(served)
        assert _exits(served)
    assert sse[0] == "accepted"
    assert sse[-1] == "done"
    assert frames[-1]["type"] == "done"
    assert _stored(tmp_path / "cli.db") == [("user", "complete"), ("assistant", "complete")] * 2


async def test_turns_past_the_grace_get_a_last_error_and_are_stored_as_interrupted(
    tmp_path: Path,
) -> None:
    env = {**SLOW, "PARLEY_SHUTDOWN_GRACE_SECONDS": "0.5"}
    with serve_process(tmp_path, env=env) as served:
        sse, frames = await _terminate_mid_turn(served)
        assert _exits(served)
    assert sse[-1] == "error"
    assert (frames[-1]["type"], frames[-1]["code"]) == ("error", "turn_interrupted")
    assert _stored(tmp_path / "cli.db") == [("user", "complete"), ("assistant", "interrupted")] * 2


@pytest.mark.parametrize("grace", ["0"])
async def test_a_stopped_server_exits_promptly_with_nothing_in_flight(
    tmp_path: Path, grace: str
) -> None:
    with serve_process(tmp_path, env={"PARLEY_SHUTDOWN_GRACE_SECONDS": grace}) as served:
        served.process.send_signal(signal.SIGTERM)
        assert _exits(served)
