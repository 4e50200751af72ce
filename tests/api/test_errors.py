"""Every failure answers with one shape: {"error": {"type", "code", "message"}}."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from parley.app import create_app
from tests.conftest import make_settings


def _assert_error_shape(body: dict[str, object]) -> dict[str, str]:
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    assert {"type", "code", "message"} <= set(error)
    assert all(isinstance(error[k], str) and error[k] for k in ("type", "code", "message"))
    return error


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/no/such/route", 404),
        ("DELETE", "/v1/conversations/", 405),
        ("GET", "/v1/goals/missing", 404),
        ("POST", "/v1/goals/", 422),
    ],
)
def test_errors_share_one_shape(client: TestClient, method: str, path: str, status: int) -> None:
    response = client.request(method, path, json={})
    assert response.status_code == status
    _assert_error_shape(response.json())


def test_unexpected_exception_is_a_500_with_the_same_shape(tmp_path: Path) -> None:
    """A bug answers 500 in the error shape and leaks no exception text."""
    app: FastAPI = create_app(make_settings(tmp_path))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    error = _assert_error_shape(response.json())
    assert error["code"] == "internal_error"
    assert "secret" not in response.text


def test_request_id_is_returned_and_reused_when_safe(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    unsafe = client.get("/healthz", headers={"X-Request-ID": "x" * 500}).headers["x-request-id"]
    assert unsafe != "x" * 500


def test_oversized_request_body_is_413_in_the_error_shape(tmp_path: Path) -> None:
    """A body over PARLEY_MAX_BODY_BYTES is refused before it is parsed."""
    with TestClient(create_app(make_settings(tmp_path, max_body_bytes=1000))) as client:
        response = client.post(
            "/v1/conversations/", json={"goal_id": "g", "metadata": {"blob": "x" * 5000}}
        )
    assert response.status_code == 413
    error = _assert_error_shape(response.json())
    assert error["type"] == "payload_too_large"


def test_oversized_chunked_body_is_413_in_the_error_shape(tmp_path: Path) -> None:
    """Without a Content-Length the body is counted as it arrives."""

    def chunks() -> Iterator[bytes]:
        yield b'{"goal_id": "g", "metadata": {"blob": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}}'

    with TestClient(create_app(make_settings(tmp_path, max_body_bytes=1000))) as client:
        response = client.post(
            "/v1/conversations/", content=chunks(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert _assert_error_shape(response.json())["type"] == "payload_too_large"
