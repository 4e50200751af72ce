"""``parley serve`` as a user runs it: a real process, a real port, data kept across restarts."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.serve import serve, serve_process

pytestmark = pytest.mark.integration


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
    env = {
        **os.environ,
        "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "PARLEY_LOG_FORMAT": "json",
    }
    result = subprocess.run(
        [sys.executable, "-m", "parley", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # Only what ran: Alembic's plugin set-up and context lines came on every start.
    events = [json.loads(line)["event"] for line in (result.stdout + result.stderr).splitlines()]
    assert [event.split(",")[0] for event in events] == [
        "Running upgrade  -> 0001",
        "Running upgrade 0001 -> 0002",
        "Running upgrade 0002 -> 0003",
    ]
    connection = sqlite3.connect(db)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    finally:
        connection.close()
    assert {"goals", "conversations", "messages", "alembic_version"} <= tables


@pytest.mark.parametrize(("trusted", "refused"), [(None, True), ("127.0.0.1/32", False)])
def test_x_forwarded_for_names_the_client_only_from_a_trusted_proxy(
    tmp_path: Path, trusted: str | None, refused: bool
) -> None:
    """parley serve trusted X-Forwarded-For from 127.0.0.1 (uvicorn's default): 200 key
    guesses with a fresh address each were all weighed against a budget of 20. Nobody is
    trusted now unless PARLEY_TRUSTED_PROXIES names it; from a trusted proxy the header
    names the client, and each client has its own budget."""
    env = {"PARLEY_API_KEYS": "sekret", "PARLEY_AUTH_FAILURES_PER_MINUTE": "5"}
    if trusted is not None:
        env["PARLEY_TRUSTED_PROXIES"] = trusted
    with serve(tmp_path, env=env) as url:
        codes = [
            httpx.get(
                f"{url}/v1/goals/",
                headers={"Authorization": f"Bearer guess{i}", "X-Forwarded-For": f"203.0.113.{i}"},
            ).status_code
            for i in range(10)
        ]
    assert codes == ([401] * 5 + [429] * 5 if refused else [401] * 10)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_answers_metrics_on_the_metrics_port_only(tmp_path: Path, workers: str) -> None:
    metrics_port = free_port()
    with serve_process(
        tmp_path, "--workers", workers, env={"PARLEY_METRICS_PORT": str(metrics_port)}
    ) as served:
        assert httpx.get(f"{served.url}/v1/goals/").status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert metrics.status_code == 200
        assert 'path="/v1/goals/"' in metrics.text
        assert httpx.get(f"{served.url}/metrics").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/v1/goals/").status_code == 404
    log = served.log.read_text()
    assert f'"metrics_url": "http://127.0.0.1:{metrics_port}/metrics"' in log
    assert '"authentication": "off (PARLEY_API_KEYS is empty)"' in log


def test_a_port_in_use_is_one_line_and_exit_2_before_migrations_run(tmp_path: Path) -> None:
    """uvicorn bound the port after the app's start-up: the schema was migrated first, and
    the error was a log record after it."""
    database = tmp_path / "never.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
        result = subprocess.run(
            [sys.executable, "-m", "parley", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"parley: PARLEY_PORT: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert not database.exists()
