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
