"""/metrics: valid Prometheus text, OpenMetrics on request, gzip, optional bearer token."""

from __future__ import annotations

import asyncio
import gzip
import subprocess
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.websockets import WebSocketDisconnect

from parley.observability.exposition import MetricsEndpoint
from tests.api.helpers import make_conversation, make_goal
from tests.conftest import app_client, make_settings
from tests.support.metrics import FakeClock
from tests.support.tools import require_tool


def _exercise(client: TestClient) -> None:
    make_goal(client)
    conversation_id = make_conversation(client)
    client.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "hi"})
    client.post(
        f"/v1/conversations/{conversation_id}/messages", json={"content": "again", "stream": True}
    )
    client.get("/v1/goals/missing")


def test_metrics_is_valid_prometheus_text(client: TestClient) -> None:
    _exercise(client)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    for name in (
        "http_requests",
        "http_request_duration_seconds",
        "api_errors",
        "llm_requests",
        "llm_latency_seconds",
        "llm_ttft_seconds",
        "llm_tokens_used",
        "ws_connections_active",
        "conversations_created",
        "conversations_active",
        "escalations",
        "db_queries",
        "process_resident_memory_bytes",
        "python_info",
    ):
        assert name in families, name
    assert families["http_requests"].type == "counter"
    assert families["http_request_duration_seconds"].type == "histogram"
    assert families["ws_message_size_bytes"].type == "summary"
    assert families["conversations_active"].type == "gauge"


@pytest.mark.integration
def test_promtool_finds_no_problems(client: TestClient, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    _exercise(client)
    exposition = client.get("/metrics").text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""


def test_openmetrics_on_request_with_request_id_exemplars(client: TestClient) -> None:
    _exercise(client)
    request_id = client.get("/healthz", headers={"X-Request-ID": "trace-me-1"}).headers[
        "x-request-id"
    ]
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
    exemplars = [
        sample.exemplar
        # prometheus_client leaves its OpenMetrics parser untyped.
        for family in parse_openmetrics(response.text)  # type: ignore[no-untyped-call]
        if family.name == "http_request_duration_seconds"
        for sample in family.samples
        if sample.exemplar is not None
    ]
    assert request_id in {exemplar.labels["request_id"] for exemplar in exemplars}


def test_gzip_when_accepted(client: TestClient) -> None:
    plain = client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    with client.stream("GET", "/metrics", headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert b"http_requests_total" in gzip.decompress(raw)


def test_bearer_token_protects_metrics(tmp_path: Path) -> None:
    with app_client(make_settings(tmp_path, metrics_token="s3cret")) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_metrics_token"
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        allowed = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200
        assert "http_requests_total" in allowed.text


async def test_a_scrape_storm_costs_one_render_and_one_hook_run_per_interval() -> None:
    """86 scrapes a second each rendered every series and ran a COUNT on the database
    (turn p50 6.8 -> 113 ms). Within PARLEY_METRICS_CACHE_SECONDS a scrape is served the
    last rendering, per format; after it, a fresh one."""
    registry = CollectorRegistry()
    counter = Counter("things", "Things.", registry=registry)
    clock = FakeClock()
    runs: list[float] = []

    async def count_active() -> None:
        runs.append(clock.now)

    endpoint = MetricsEndpoint(registry, hooks=[count_active], cache_seconds=1.0, clock=clock)
    app = Starlette(routes=[Route("/metrics", endpoint.handle)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://parley"
    ) as http:
        first = await asyncio.gather(*(http.get("/metrics") for _ in range(50)))
        counter.inc()
        clock.advance(0.5)
        cached = await http.get("/metrics")
        openmetrics = await http.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        clock.advance(0.5)
        fresh = await http.get("/metrics")
    assert {answer.text for answer in first} == {cached.text}
    assert "things_total 0.0" in cached.text
    assert "things_total 1.0" in openmetrics.text  # another format: rendered on its own
    assert "things_total 1.0" in fresh.text
    assert len(runs) == 3


async def test_with_no_cache_interval_every_scrape_is_fresh() -> None:
    registry = CollectorRegistry()
    counter = Counter("things", "Things.", registry=registry)
    endpoint = MetricsEndpoint(registry, cache_seconds=0)
    app = Starlette(routes=[Route("/metrics", endpoint.handle)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://parley"
    ) as http:
        await http.get("/metrics")
        counter.inc()
        assert "things_total 1.0" in (await http.get("/metrics")).text


def test_with_a_metrics_port_metrics_answer_there_and_only_metrics_do(tmp_path: Path) -> None:
    """PARLEY_METRICS_PORT: the API's port can be public while /metrics is not on it."""
    settings = make_settings(tmp_path, port=8000, metrics_port=9100)
    with app_client(settings) as client:
        on_metrics_port = client.get("http://testserver:9100/metrics")
        assert on_metrics_port.status_code == 200
        assert "http_requests_total" in on_metrics_port.text
        assert client.get("http://testserver:8000/metrics").status_code == 404
        assert client.get("http://testserver:8000/healthz").status_code == 200
        assert client.get("http://testserver:9100/healthz").status_code == 404
        assert client.get("http://testserver:9100/v1/goals/").status_code == 404
        with (
            pytest.raises(WebSocketDisconnect) as closed,
            client.websocket_connect("ws://testserver:9100/v1/ws"),
        ):
            pass
        assert closed.value.code == 1008
