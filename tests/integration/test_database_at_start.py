"""A database that cannot be used at start-up: one line naming the variable, where (never
the password) and why, exit 2; it was a 60-frame traceback and exit 3."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_URL
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

PASSWORD = "hunter2-never-printed"


def _run(command: str, database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PARLEY_DATABASE_URL": database_url,
        "PARLEY_DB_CONNECT_TIMEOUT_SECONDS": "1",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "parley",
            command,
            *(["--port", str(free_port())] * (command == "serve")),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


@contextmanager
def _silent_server() -> Iterator[int]:
    """A port that takes connections and never answers: a partitioned database."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def _postgres(user: str, host_port: str, database: str) -> str:
    return f"postgresql+asyncpg://{user}:{PASSWORD}@{host_port}/{database}"


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("refused", "connection refused"),
        ("unknown_database", "unknown database"),
        ("unknown_role", "authentication failed (no such role)"),
        ("silent", "timed out"),
        ("sqlite_directory_missing", "cannot open the file"),
    ],
)
def test_a_database_that_cannot_be_used_is_one_line_and_exit_2(
    tmp_path: Path, command: str, case: str, expected: str
) -> None:
    server = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0]
    with _silent_server() as silent_port:
        url, where = {
            "refused": (
                _postgres("parley", f"127.0.0.1:{free_port()}", "parley"),
                "parley@127.0.0.1:",
            ),
            "unknown_database": (
                _postgres("postgres", server, "no_such_database"),
                f"postgres@{server}/no_such_database",
            ),
            "unknown_role": (
                _postgres("no_such_role", server, "test"),
                f"no_such_role@{server}/test",
            ),
            "silent": (
                _postgres("parley", f"127.0.0.1:{silent_port}", "parley"),
                f"parley@127.0.0.1:{silent_port}/parley",
            ),
            "sqlite_directory_missing": (
                f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'parley.db'}",
                f"SQLite file {tmp_path / 'missing' / 'parley.db'}",
            ),
        }[case]
        result = _run(command, url, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("parley: PARLEY_DATABASE_URL: cannot use ")
    assert where in lines[0]
    assert expected in lines[0]
    assert PASSWORD not in result.stderr + result.stdout
