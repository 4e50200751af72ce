"""``parley demo``: traffic of every kind against a running Parley, failures on request."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from parley import demo
from parley.app import create_app
from parley.cli import main
from tests.conftest import make_settings
from tests.support.live_server import LiveServer
from tests.support.metrics import value

pytestmark = pytest.mark.integration


def test_demo_drives_whole_sse_and_websocket_turns_and_fails_some_on_request(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path, sim_ttft_seconds=0, sim_token_delay_seconds=0, llm_max_retries=0
    )
    app = create_app(settings)
    registry: CollectorRegistry = app.state.instrumentation.registry
    with LiveServer(app) as server:
        out = io.StringIO()
        plan = demo.Plan(server.http_url, 3, 120, 40, 0.3, None)
        progress = asyncio.run(demo.run(plan, out))
    assert progress.turns >= 40
    assert progress.outcomes["error"] > 0  # the failures asked for
    assert progress.outcomes["ok"] > 0
    assert "turns/s" in out.getvalue()
    for channel in ("http", "sse", "ws"):
        assert value(registry, "conversation_turns_total", channel=channel, outcome="ok"), channel
    failed = sum(
        value(registry, "conversation_turns_total", channel=channel, outcome="llm_error") or 0
        for channel in ("http", "sse", "ws")
    )
    # The server saw them too (a third failure in a row also escalates: the demo counts
    # that turn as escalated).
    assert failed >= progress.outcomes["error"]


def test_demo_says_when_nothing_answers() -> None:
    assert main(["demo", "--url", "http://127.0.0.1:9", "--seconds", "1"]) == 1
