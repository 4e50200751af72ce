"""``parley serve`` as a user runs it: a real process, a real port, data kept across restarts."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serve(tmp_path: Path, *args: str) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "PARLEY_LLM_PROVIDER": "simulated",
        "PARLEY_SIM_TTFT_SECONDS": "0",
        "PARLEY_SIM_TOKEN_DELAY_SECONDS": "0",
        "PARLEY_LOG_FORMAT": "json",
    }
    env.pop("GROQ_API_KEY", None)
    log = (tmp_path / f"serve-{port}.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "parley", "serve", "--port", str(port), *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"parley serve exited: {(tmp_path / log.name).read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("parley serve did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_serve_keeps_data_across_a_restart(tmp_path: Path) -> None:
    with serve(tmp_path) as url:
        goal = {"id": "support", "name": "Support", "instructions": "Help."}
        assert httpx.post(f"{url}/v1/goals/", json=goal).status_code == 201
        conversation = httpx.post(f"{url}/v1/conversations/", json={"goal_id": "support"}).json()
        reply = httpx.post(
            f"{url}/v1/conversations/{conversation['id']}/messages", json={"content": "hi"}
        )
        assert reply.status_code == 200
        assert reply.headers["x-request-id"]
    with serve(tmp_path) as url:
        restored = httpx.get(f"{url}/v1/conversations/{conversation['id']}").json()
        assert [m["role"] for m in restored["messages"]] == ["user", "assistant"]


def test_serve_with_two_workers_migrates_once_and_serves(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "2") as url:
        goal = {"id": "w", "name": "Workers", "instructions": "Help."}
        assert httpx.post(f"{url}/v1/goals/", json=goal).status_code == 201
        for _ in range(10):
            assert httpx.get(f"{url}/v1/goals/w").status_code == 200


def test_migrate_command_creates_the_schema(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    env = {**os.environ, "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    result = subprocess.run(
        [sys.executable, "-m", "parley", "migrate"], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    connection = sqlite3.connect(db)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    finally:
        connection.close()
    assert {"goals", "conversations", "messages", "alembic_version"} <= tables
