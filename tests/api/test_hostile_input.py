"""Hostile input: no request reaches a 500; every refusal is in the one error shape."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import app_client, make_settings


@pytest.mark.parametrize("token", [None, "scrape-secret"])
@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT", "PATCH"])
def test_metrics_answers_other_methods_with_405_in_the_error_shape(
    tmp_path: Path, method: str, token: str | None
) -> None:
    """Anyone could raise the 5xx rate (and page someone) with POST /metrics; it is a 4xx."""
    with app_client(make_settings(tmp_path, metrics_token=token)) as client:
        response = client.request(method, "/metrics")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"
        assert response.json()["error"]["type"] == "method_not_allowed"
        scrape = client.get(
            "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {}
        ).text
    line = next(
        line
        for line in scrape.splitlines()
        if line.startswith("http_requests_total{")
        and 'path="/metrics"' in line
        and f'method="{method}"' in line
    )
    assert 'status="405"' in line


def test_head_metrics_is_served(client: TestClient) -> None:
    assert client.head("/metrics").status_code == 200


@pytest.mark.parametrize("length", [64, 100, 118, 119, 128])
def test_a_long_request_id_never_fails_a_turn(tmp_path: Path, length: int) -> None:
    """An X-Request-ID that overflowed prometheus_client's 128-character exemplar limit made
    every LLM turn answer 500 (the reply generated and lost). Ids that could not be an
    exemplar are replaced; the turn succeeds and the LLM metrics agree."""
    incoming = "r" * length
    with app_client(make_settings(tmp_path)) as client:
        client.post("/v1/goals/", json={"id": "g", "name": "G", "instructions": "Help."})
        conversation = client.post("/v1/conversations/", json={"goal_id": "g"}).json()["id"]
        url = f"/v1/conversations/{conversation}/messages"
        whole = client.post(url, json={"content": "hi"}, headers={"X-Request-ID": incoming})
        assert whole.status_code == 200, whole.text
        streamed = client.post(
            url, json={"content": "hi", "stream": True}, headers={"X-Request-ID": incoming}
        )
        assert streamed.text.rstrip().split("\n\n")[-1].startswith("event: done")
        echoed = whole.headers["x-request-id"]
        assert echoed == incoming if length <= 64 else echoed != incoming
        scrape = client.get("/metrics").text
    requests = _sum(scrape, "llm_requests_total")
    latencies = _sum(scrape, "llm_latency_seconds_count")
    assert requests == latencies == 2


def _sum(exposition: str, sample: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith(sample + "{")
    )
