"""Hostile input: no request reaches a 500; every refusal is in the one error shape."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from fastapi.testclient import TestClient

from parley.app import create_app
from parley.domain.errors import InvalidCursorError
from parley.domain.paging import decode_cursor
from tests.conftest import app_client, make_settings
from tests.support.live_server import LiveServer
from tests.support.serve import serve


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


@pytest.fixture
def hostile(tmp_path: Path, database_url: str) -> Iterator[tuple[TestClient, str]]:
    """A client on both databases, with a goal and a conversation."""
    with app_client(make_settings(tmp_path, database_url=database_url)) as client:
        client.post("/v1/goals/", json={"id": "g", "name": "G", "instructions": "Help."})
        conversation = client.post("/v1/conversations/", json={"goal_id": "g"}).json()["id"]
        yield client, conversation


def _refused(response: Any, status: int = 422) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"type", "code", "message"}


BAD_TEXT = ["nul \u0000 inside", "lone \ud800 surrogate"]


@pytest.mark.parametrize("text", [*BAD_TEXT, "   ", "\n\t"])
def test_message_content_that_cannot_be_stored_or_says_nothing_is_refused(
    hostile: tuple[TestClient, str], text: str
) -> None:
    client, conversation = hostile
    url = f"/v1/conversations/{conversation}/messages"
    for stream in (False, True):
        _refused(_send(client, "POST", url, {"content": text, "stream": stream}))
    assert client.get(f"/v1/conversations/{conversation}").json()["messages"] == []


@pytest.mark.parametrize("text", BAD_TEXT)
def test_names_notes_and_filters_with_unstorable_text_are_refused(
    hostile: tuple[TestClient, str], text: str
) -> None:
    client, conversation = hostile
    _refused(_send(client, "POST", "/v1/goals/", {"name": text, "instructions": "x"}))
    _refused(_send(client, "POST", "/v1/goals/", {"name": "n", "instructions": text}))
    _refused(_send(client, "PATCH", "/v1/goals/g", {"name": text}))
    _refused(_send(client, "POST", f"/v1/conversations/{conversation}/escalate", {"note": text}))
    # Percent-encoded as a hostile client would (a lone surrogate as its invalid UTF-8 bytes).
    raw = quote(text.encode("utf-8", "surrogatepass"))
    filtered = client.get(f"/v1/conversations/?goal_id={raw}")
    assert filtered.status_code == 422 if "\x00" in text else filtered.status_code in (200, 422)
    if filtered.status_code == 200:  # undecodable bytes read as U+FFFD: a filter matching none
        assert filtered.json()["items"] == []
    _refused(client.get(f"/v1/goals/{raw}"), 404)


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    "metadata",
    [
        _nested(256),
        _nested(9),
        {"big": "x" * 20_000},
        {"n": float("nan")},
        {"n": float("inf")},
        {"nul": "a\u0000b"},
        {"a\u0000": 1},
    ],
    ids=["depth-256", "depth-9", "size", "nan", "infinity", "nul-value", "nul-key"],
)
def test_metadata_is_bounded_at_input_and_never_poisons_the_list(
    hostile: tuple[TestClient, str], metadata: object
) -> None:
    client, _ = hostile
    _refused(_send(client, "POST", "/v1/conversations/", {"goal_id": "g", "metadata": metadata}))
    assert client.get("/v1/conversations/").status_code == 200


def test_metadata_within_the_bounds_is_kept(hostile: tuple[TestClient, str]) -> None:
    client, _ = hostile
    metadata = {"channel": "web", "nested": _nested(7), "n": 1.5, "list": [1, "two", None]}
    created = client.post("/v1/conversations/", json={"goal_id": "g", "metadata": metadata})
    assert created.status_code == 201, created.text
    assert created.json()["metadata"] == metadata


@pytest.mark.parametrize(
    "cursor",
    [
        ["9999-12-31T23:59:59.999999-23:59", "00000000-0000-0000-0000-000000000000"],
        ["0001-01-01T00:00:00+23:59", "00000000-0000-0000-0000-000000000000"],
        [1, 2],
        {"a": 1},
        ["2026-01-01T00:00:00+00:00", "not-a-uuid"],
        ["2026-01-01T00:00:00+00:00"],
    ],
)
def test_crafted_cursors_are_422(hostile: tuple[TestClient, str], cursor: object) -> None:
    client, _ = hostile
    raw = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")
    _refused(client.get("/v1/conversations/", params={"cursor": raw}))


@pytest.mark.parametrize("depth", [70, 5_000])
def test_a_cursor_of_deeply_nested_json_is_422(hostile: tuple[TestClient, str], depth: int) -> None:
    """Base64 of JSON nested past the parser's recursion limit answered 500. A cursor is
    now refused past 200 characters, and one that fits is read without recursing deep."""
    client, _ = hostile
    raw = base64.urlsafe_b64encode(b"[" * depth + b"]" * depth).decode().rstrip("=")
    _refused(client.get("/v1/conversations/", params={"cursor": raw}))
    assert client.get("/v1/conversations/").status_code == 200


def test_decoding_a_cursor_nested_past_the_recursion_limit_is_an_invalid_cursor() -> None:
    raw = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
    with pytest.raises(InvalidCursorError):
        decode_cursor(raw)


@pytest.mark.parametrize("before", [2**31, 2**63, 10**30])
def test_messages_before_past_any_seq_the_database_holds_is_422(
    hostile: tuple[TestClient, str], before: int
) -> None:
    """Past the column's range (2^31 on PostgreSQL, 2^63 on SQLite) it answered 500."""
    client, conversation = hostile
    _refused(client.get(f"/v1/conversations/{conversation}", params={"messages_before": before}))
    page = client.get(f"/v1/conversations/{conversation}", params={"messages_before": 2**31 - 1})
    assert page.status_code == 200


def _send(client: TestClient, method: str, url: str, body: object) -> Any:
    # json.dumps escapes lone surrogates and writes NaN, as a hostile client would send them.
    return client.request(
        method, url, content=json.dumps(body), headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/v1/goals/support", {"GET", "PATCH", "DELETE"}),
        ("/v1/goals/", {"GET", "POST"}),
        ("/v1/conversations/00000000-0000-0000-0000-000000000000", {"GET", "DELETE"}),
    ],
)
def test_405_lists_every_method_the_path_allows(
    client: TestClient, path: str, allowed: set[str]
) -> None:
    response = client.put(path, json={})
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == allowed
    assert response.json()["error"]["type"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/v1/conversations/%0A", "/v1/goals/%0A", "/healthz%0A"])
def test_a_path_with_a_control_character_matches_no_route(client: TestClient, path: str) -> None:
    """Python's ``$`` matches before a trailing newline: ``/v1/conversations/\\n`` was the list."""
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "route_not_found"


@pytest.mark.integration
async def test_a_body_that_never_arrives_gets_408_and_frees_the_request(tmp_path: Path) -> None:
    """Headers, then a trickle (or nothing): 1,000 such requests were held open past 65 s."""
    app = create_app(make_settings(tmp_path, body_timeout_seconds=0.5))
    with LiveServer(app) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /v1/goals/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"name": '
        )
        await writer.drain()
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.read(1000)
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(body)["error"]["type"] == "request_timeout"


@pytest.mark.integration
async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    tmp_path: Path,
) -> None:
    """After a response, a kept-alive connection that sends nothing more is closed
    (``PARLEY_KEEP_ALIVE_SECONDS``), so idle clients cannot hold sockets forever."""
    with serve(tmp_path, env={"PARLEY_KEEP_ALIVE_SECONDS": "1"}) as url:
        reader, writer = await asyncio.open_connection("127.0.0.1", urlsplit(url).port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(30):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            while await reader.read(1024):  # the body, then the server's close
                pass
        writer.close()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/conversations/{id}/messages", {"content": "hi", "role": "agent"}),
        ("/v1/conversations/{id}/messages", {"content": "hi", "stream": True, "role": "agent"}),
        ("/v1/conversations/", {"goal_id": "g", "owner": "someone"}),
        ("/v1/goals/", {"name": "G", "instructions": "Help.", "prompt": "x"}),
        (
            "/v1/goals/",
            {"name": "G", "instructions": "Help.", "escalation": {"max_turn": 3}},
        ),
        ("/v1/conversations/{id}/escalate", {"reason": "manual", "agent": "a"}),
    ],
)
def test_an_unknown_body_field_is_refused_with_422_not_ignored(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    """{"role": "agent"} on a message was dropped without a word, and the message stored as
    the user's."""
    client.post("/v1/goals/", json={"id": "g", "name": "G", "instructions": "Help."})
    conversation = client.post("/v1/conversations/", json={"goal_id": "g"}).json()["id"]
    response = client.post(path.format(id=conversation), json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert any(detail.get("type") == "extra_forbidden" for detail in error["details"]), error
    assert client.get(f"/v1/conversations/{conversation}").json()["messages"] == []


def test_an_unknown_field_in_a_goal_update_is_refused(client: TestClient) -> None:
    client.post("/v1/goals/", json={"id": "g", "name": "G", "instructions": "Help."})
    response = client.patch("/v1/goals/g", json={"name": "H", "colour": "red"})
    assert response.status_code == 422
    assert client.get("/v1/goals/g").json()["name"] == "G"
