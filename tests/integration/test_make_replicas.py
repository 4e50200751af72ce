"""`make replicas` as a person runs it: on a database of its own (never the suite's
`test`), saying what it runs with and where to look, every address it prints answering,
and Ctrl-C stopping it in seconds with a line per component (it took 30 s in silence)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.replicas import ROOT
from tests.support.tools import require_tool
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/parley_replicas_check"


def test_make_replicas_says_where_to_look_and_stops_in_seconds(tmp_path: Path) -> None:
    for tool in ("haproxy", "prometheus", "victoria-metrics"):
        require_tool(tool)
    out = tmp_path / "replicas.out"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.replicas"],
            cwd=ROOT,
            env={**os.environ, "PARLEY_DATABASE_URL": DATABASE},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: (
                    b"Ctrl-C stops everything" in out.read_bytes() or process.poll() is not None
                ),
                "the banner",
                timeout=120,
                interval=0.5,
            )
            banner = out.read_text()
            assert "parley_replicas_check" in banner, banner
            assert "rate\nlimits on" in banner, banner
            assert "simulated LLM" in banner, banner
            urls = re.findall(r"(?<![=\w])http://127\.0\.0\.1:[^\s)]+", banner)
            assert len(urls) >= 7, banner
            for url in urls:
                if "/v1" in url or url.endswith("--url"):
                    continue
                assert httpx.get(url, timeout=10).status_code == 200, url
        finally:
            process.send_signal(signal.SIGINT)  # Ctrl-C
            process.wait(timeout=60)  # a deadline for a busy machine
    said = out.read_text()
    for component in ("haproxy", "prometheus", "victoria-metrics", "parley-1", "parley-3"):
        assert f"stopped {component}" in said, said[-2000:]
    assert process.returncode == 0, said[-2000:]
