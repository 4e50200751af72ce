"""Every benchmark runs once at tiny sizes, so none of them can rot. No timing is asserted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.inprocess import _call

from bench import variants
from tests.support.tools import require_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def test_every_benchmark_runs_at_tiny_sizes() -> None:
    require_tool("wrk")
    result = _run_module("bench", "--quick")
    for section in (
        "In-process",
        "HTTP under uvicorn",
        "Microbenchmarks",
        "/metrics scrape",
        "Memory",
        "Streamed turns",
        "Whole turns",
        "Targets",
    ):
        assert section in result.stdout, section
    for variant in (
        "bare",
        "parley",
        "instrumentator",
        "starlette_exporter",
        "guideline",
        "passthrough",
        "parley sse",
        "parley ws",
    ):
        assert variant in result.stdout


async def test_the_parley_variant_counts_the_requests_it_serves() -> None:
    """The benchmark measures working instrumentation, not a no-op."""
    app = variants.parley()
    for _ in range(3):
        await _call(app, "GET", "/things3/42")
    await _call(app, "GET", "/nowhere")
    registry = app.state.instrumentation.registry
    labels = {"path": "/things3/{item_id}", "method": "GET", "status": "200"}
    assert registry.get_sample_value("http_requests_total", labels) == 3
    unmatched = {"path": "<unmatched>", "method": "GET", "status": "404"}
    assert registry.get_sample_value("http_requests_total", unmatched) == 1


def test_a_short_soak_accounts_for_every_turn_exactly() -> None:
    """``make soak`` at a few seconds: mixed clients, then acknowledged == stored, the HTTP
    counter grown by the requests sent, no WebSocket left open (exit status 0)."""
    result = _run_module("bench.soak", "--seconds", "3", "--clients", "4")
    assert "stored as acknowledged: True" in result.stdout


def _run_module(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repository root; it must exit 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result
