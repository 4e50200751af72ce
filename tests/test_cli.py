"""The command line: version, help that a person can read, and values it refuses."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from parley import __version__
from parley.cli import build_parser, main
from tests.support.ports import free_port


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"parley {__version__}"


def test_help_is_plain_text_and_lists_the_environment_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "``" not in text  # no raw reST
    for variable in ("PARLEY_DATABASE_URL", "GROQ_API_KEY", "PARLEY_API_KEYS", "PARLEY_PORT"):
        assert variable in text


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "0"],
        ["--port", "70000"],
        ["--port", "http"],
        ["--workers", "0"],
        ["--workers", "-2"],
    ],
)
def test_invalid_ports_and_worker_counts_are_refused(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["serve", *args])
    assert refused.value.code == 2
    assert "invalid" in capsys.readouterr().err


@pytest.mark.parametrize(
    "limit",
    [["--budget-usd", "0"], ["--budget-usd", "nan"], ["--rpm=-1"], ["--tpm", "1.5"]],
)
def test_key_budgets_and_limits_must_be_positive_numbers(
    limit: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["keys", "create", "--name", "shop", "--role", "client", *limit])
    assert refused.value.code == 2
    assert f"error: argument {limit[0].partition('=')[0]}:" in capsys.readouterr().err


def test_workers_share_a_socket_with_nodelay_and_serve_on_uvloop_and_httptools(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With --workers the socket is bound before the workers start; Linux hands its
    TCP_NODELAY to each accepted connection (without it, small replies wait ~40 ms for
    delayed ACKs)."""
    seen: dict[str, Any] = {}

    class FakeMultiprocess:
        def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
            seen["loop"], seen["http"] = config.loop, config.http
            seen["healthcheck"] = config.timeout_worker_healthcheck
            seen["nodelay"] = [
                s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets
            ]
            for sock in sockets:
                sock.close()

        def run(self) -> None:
            seen["ran"] = True

    monkeypatch.setattr("uvicorn.supervisors.Multiprocess", FakeMultiprocess)
    # serve sets these for its workers: recorded here so they are undone after the test.
    monkeypatch.setenv("PARLEY_AUTO_MIGRATE", "true")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    monkeypatch.setenv("PARLEY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    port = free_port()
    assert main(["serve", "--workers", "2", "--port", str(port)]) == 0
    assert seen == {
        "loop": "uvloop",
        "http": "httptools",
        "nodelay": [1],
        "ran": True,
        # Generous: a worker importing Parley on a loaded 2-core machine is not hung.
        "healthcheck": 60,
    }


def test_serve_keeps_an_idle_connection_longer_than_a_proxy_in_front_does(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A proxy reuses its idle connections to Parley for up to its own idle timeout
    (60 s at AWS's load balancers and nginx's upstream keep-alive). If Parley closed
    them first (uvicorn's default is 5 s), a request sent as it closes one is reset."""
    seen: dict[str, Any] = {}

    class FakeServer:
        def __init__(self, config: uvicorn.Config) -> None:
            seen["default"] = config.timeout_keep_alive
            self.started = True

        def run(self, sockets: list[socket.socket] | None = None) -> None:
            for sock in sockets or []:
                sock.close()

    monkeypatch.setattr("uvicorn.Server", FakeServer)
    monkeypatch.setenv("PARLEY_AUTO_MIGRATE", "false")
    monkeypatch.setenv("PARLEY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    assert main(["serve", "--port", str(free_port())]) == 0
    assert seen["default"] > 60


@pytest.mark.integration
def test_the_cli_module_imports_nothing_a_worker_imports_later() -> None:
    """A spawned --workers worker imports the `parley` script's module before it can
    answer uvicorn's health check: the server, store and client stay out of it."""
    heavy = ("uvicorn", "fastapi", "sqlalchemy", "alembic", "httpx", "websockets", "structlog")
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, parley.cli; print(*[m for m in {heavy!r} if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.split() == []


def test_the_demo_reads_its_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key given as --api-key is visible to anyone running `ps`."""
    monkeypatch.setenv("PARLEY_DEMO_API_KEY", "k-from-env")
    assert build_parser().parse_args(["demo"]).api_key == "k-from-env"
    assert build_parser().parse_args(["demo", "--api-key", "k2"]).api_key == "k2"
