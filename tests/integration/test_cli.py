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
from tests.support.waiting import wait_until

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
        "Running upgrade 0003 -> 0004",
        "Running upgrade 0004 -> 0005",
        "Running upgrade 0005 -> 0006",
        "Running upgrade 0006 -> 0007",
        "Running upgrade 0007 -> 0008",
        "Running upgrade 0008 -> 0009",
        "Running upgrade 0009 -> 0010",
        "Running upgrade 0010 -> 0011",
        "Running upgrade 0011 -> 0012",
        "Running upgrade 0012 -> 0013",
    ]
    connection = sqlite3.connect(db)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    finally:
        connection.close()
    assert {"goals", "conversations", "messages", "api_keys", "alembic_version"} <= tables


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
        # A request is counted once its response is sent: the client can scrape first
        # (a busy CI machine did, with two workers).
        wait_until(
            lambda: (
                'path="/v1/goals/"' in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
            ),
            "the request counted on the metrics port",
        )
        assert httpx.get(f"{served.url}/metrics").status_code == 404
        assert httpx.get(f"http://127.0.0.1:{metrics_port}/v1/goals/").status_code == 404
    log = served.log.read_text()
    assert f'"metrics_url": "http://127.0.0.1:{metrics_port}/metrics"' in log
    assert '"authentication": "off: no API key exists (development mode' in log


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


def _parley(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parley", *args],
        env={
            **os.environ,
            "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
            "PARLEY_LOG_FORMAT": "json",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_keys_made_and_revoked_from_the_shell_act_on_a_running_server(tmp_path: Path) -> None:
    """`parley keys` in another process: the server takes a key made there, and stops
    taking it as soon as it is revoked there; the secret is printed once, never listed."""
    made = _parley(
        tmp_path,
        "keys",
        "create",
        "--name",
        "shop",
        "--role",
        "client",
        "--budget-usd",
        "25",
        "--budget-period",
        "week",
        "--rpm",
        "600",
        "--tpm",
        "90000",
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.splitlines()[-1]
    assert secret.startswith("parley_")
    with serve(tmp_path) as url:
        headers = {"Authorization": f"Bearer {secret}"}
        assert httpx.get(f"{url}/v1/goals/").status_code == 401  # a key exists: closed
        assert httpx.get(f"{url}/v1/goals/", headers=headers).status_code == 200
        listed = _parley(tmp_path, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        header, row = listed.stdout.splitlines()
        assert header.split() == [
            "NAME", "ROLE", "CREATED", "LAST", "USED", "SPEND", "BUDGET", "STATUS"
        ]  # fmt: skip
        assert row.split()[:2] == ["shop", "client"]
        assert row.split()[-3:-1] == ["$0.0000", "$25.00/week"]
        made_limits = httpx.get(f"{url}/v1/keys/shop", headers=headers)
        assert made_limits.status_code == 403  # a client key cannot read keys
        assert row.split()[-1] == "active"
        assert "never" not in row  # used just now
        # Limits change in place, seen by the running server at the key's next request.
        raised = _parley(
            tmp_path, "keys", "update", "shop", "--budget-usd", "50", "--budget-period", "day"
        )
        assert raised.returncode == 0, raised.stderr
        assert raised.stdout.splitlines()[1].split()[-2] == "$50.00/day"
        unbudgeted = _parley(tmp_path, "keys", "update", "shop", "--no-budget-usd")
        assert unbudgeted.stdout.splitlines()[1].split()[-2] == "-"
        assert _parley(tmp_path, "keys", "update", "nobody", "--rpm", "5").returncode == 1
        revoked = _parley(tmp_path, "keys", "revoke", "shop")
        assert revoked.returncode == 0, revoked.stderr
        assert httpx.get(f"{url}/v1/goals/", headers=headers).status_code == 401
    again = _parley(tmp_path, "keys", "create", "--name", "shop", "--role", "admin")
    assert again.returncode == 1
    assert again.stderr.strip() == (
        "parley keys: an API key named 'shop' exists (or existed: names are not reused)"
    )
    table = _parley(tmp_path, "keys", "list").stdout
    assert table.splitlines()[1].split()[-1] == "revoked"
    assert secret not in table + listed.stdout + revoked.stdout + revoked.stderr


def test_production_with_no_key_refuses_to_serve_in_one_line(tmp_path: Path) -> None:
    refused = _parley(tmp_path, "serve", "--port", str(free_port()), PARLEY_ENV="production")
    assert refused.returncode == 2
    # Beside the migrations' JSON log lines, one line that says what to do.
    said = [line for line in refused.stderr.splitlines() if not line.startswith("{")]
    assert said == [
        "parley: PARLEY_ENV is production and no API key exists: make one with"
        " `parley keys create --name NAME --role admin`, or set PARLEY_API_KEYS"
    ]
