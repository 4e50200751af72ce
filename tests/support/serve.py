"""``parley serve`` as a subprocess, the way a user starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import kill_what_is_left, stop


@dataclass(frozen=True)
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``parley serve`` on a free port until the block ends; yields its URL."""
    with serve_process(tmp_path, *args, env=env) as served:
        yield served.url


@contextmanager
def serve_process(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Served]:
    """``parley serve`` as :func:`serve` starts it, with its process and log at hand."""
    port = free_port()
    env = {
        **os.environ,
        "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "PARLEY_LLM_PROVIDER": "simulated",
        "PARLEY_SIM_TTFT_SECONDS": "0",
        "PARLEY_SIM_TOKEN_DELAY_SECONDS": "0",
        "PARLEY_LOG_FORMAT": "json",
        "PARLEY_RATE_LIMIT_PER_MINUTE": "0",  # load from one address: limits tested apart
        "PARLEY_METRICS_CACHE_SECONDS": "0",  # scraped right after acting
        **(env or {}),
    }
    env.pop("GROQ_API_KEY", None)
    log = (tmp_path / f"serve-{port}.log").open("w")
    process = subprocess.Popen(
        # the console script, as `make run` starts it (a spawned worker re-imports it)
        [str(Path(sys.executable).with_name("parley")), "serve", "--port", str(port), *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers too can be found, and stopped, as a group
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # workers import slowly on a loaded machine
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
        yield Served(url, process, tmp_path / log.name)
    finally:
        stop(process, signal.SIGINT)
        kill_what_is_left(process)
        log.close()
