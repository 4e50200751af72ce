"""The README's conversation examples, run as written against a started ``parley serve``
(only the port changes, so the test never collides with a server on 8000): a false
example fails here. The shell block's commands run in one bash session; the WebSocket
block's ``>`` lines are sent and its ``<`` lines are the frames expected, in order.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.support.serve import serve

ROOT = Path(__file__).parents[1]
SECTION = "## A conversation, step by step"


def _blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(SECTION) : readme.index("\n## ", readme.index(SECTION) + 1)]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def _commands(block: str) -> list[str]:
    """The block's commands: the text between its comment lines."""
    commands: list[str] = []
    for chunk in re.split(r"^#.*$", block, flags=re.MULTILINE):
        if chunk.strip():
            commands.append(chunk.strip())
    return commands


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"PARLEY_SIM_TTFT_SECONDS": "0.01", "PARLEY_SIM_TOKEN_DELAY_SECONDS": "0.001"}
    with serve(tmp_path_factory.mktemp("readme"), env=env) as url:
        yield url


def _run(script: str, url: str) -> list[str]:
    """Each command's output, in one bash session (so variables carry over)."""
    port = url.rsplit(":", 1)[1]
    script = script.replace("localhost:8000", f"localhost:{port}")
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    separated = "\necho; echo @@@\n".join(_commands(script)) + "\necho; echo @@@\n"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", separated],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [part.strip() for part in done.stdout.split("@@@")[:-1]]


def test_the_shell_example_works_as_written(server: str) -> None:
    goal, created, whole, streamed, escalated, conversation = _run(_blocks()[0], server)
    assert json.loads(goal)["id"] == "support"
    assert created == ""  # CID=$(...) prints nothing
    turn = json.loads(whole)
    assert turn["reply"]["content"]
    assert turn["reply"]["usage"]["total_tokens"] > 0
    events = re.findall(r"^event: (\w+)", streamed, flags=re.MULTILINE)
    assert events[0] == "accepted"
    assert "token" in events
    assert events[-1] == "done"
    refused = json.loads(escalated)
    assert refused["reply"] is None
    assert refused["escalation_reason"] == "trigger_phrase"
    loaded = json.loads(conversation)
    assert loaded["status"] == "escalated"
    assert len(loaded["messages"]) == 5  # two turns, their replies, the escalating message


def _frames(block: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The block's shell lines, and its session: (">", sent) and ("<", expected)."""
    shell, session = [], []
    for line in block.splitlines():
        if line.startswith(("> ", "< ")):
            session.append((line[0], line[2:]))
        else:
            shell.append(line)
    return shell, session


def test_the_websocket_example_works_as_written(server: str) -> None:
    shell, session = _frames(_blocks()[1])
    assert shell[-1].startswith(".venv/bin/python -m websockets ws://127.0.0.1:8000/")
    # Its conversation is made as written; then the client's session is played.
    (cid,) = _run("\n".join([*shell[:-1], 'echo "$CID2"']), server)[-1:]
    url = shell[-1].split()[-1].replace("$CID2", cid.strip())
    url = url.replace("127.0.0.1:8000", server.removeprefix("http://"))
    asyncio.run(_play(url, session))


async def _play(url: str, session: list[tuple[str, str]]) -> None:
    async with asyncio.timeout(30), connect(url) as ws:
        expected: list[str] = []
        for direction, text in session:
            if direction == ">":
                await _expect(ws, expected)
                expected = []
                await ws.send(text)
            else:
                expected.append(text)
        await _expect(ws, expected)


async def _expect(ws: object, expected: list[str]) -> None:
    """The frames written, in order: ``...`` stands for more tokens, ``{...}`` for any
    value, token texts and token counts vary; every other value must match."""
    if not expected:
        return
    received: list[dict[str, object]] = []
    while not received or received[-1]["type"] not in ("done", "escalated", "error"):
        received.append(json.loads(await ws.recv()))  # type: ignore[attr-defined]
    written = [json.loads(line.replace("{...}", "null")) for line in expected if line != "..."]
    kinds = [str(frame["type"]) for frame in received]
    assert [k for k in kinds if k != "token"] == [
        str(w["type"]) for w in written if w["type"] != "token"
    ], received
    for wanted in written:
        frame = received[kinds.index(str(wanted["type"]))]
        for key, value in wanted.items():
            if value is not None and key != "content" and not isinstance(value, dict):
                assert frame[key] == value, (key, frame)
