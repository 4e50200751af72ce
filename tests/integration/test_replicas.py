"""Three replicas on one PostgreSQL behind HAProxy, scraped by Prometheus, remote-written
to VictoriaMetrics (tests/support/replicas.py): what the clients did is what the
long-term store says, turns on one conversation stay consistent whichever replica takes
them, and one replica dying raises only that replica's warning."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mixin.dashboards import all_queries
from tests.conftest import postgres_url
from tests.support.prometheus import with_everything_selected
from tests.support.replicas import EXTERNAL_LABELS, Replicas, replicas
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    database_url = asyncio.run(postgres_url())  # emptied first
    with replicas(tmp_path_factory.mktemp("replicas"), database_url) as running:
        created = httpx.post(
            f"{running.balancer_url}/v1/goals/",
            json={
                "name": "Replicas",
                "instructions": "Answer briefly.",
                "success_criteria": "The customer says thanks.",
                "judge": {"enabled": True},
            },
        )
        assert created.status_code == 201
        yield running


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    answer.raise_for_status()
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


def _scalar(url: str, expr: str) -> float | None:
    result = _query(url, expr)
    return float(result[0]["value"][1]) if result else None


async def _traffic(url: str) -> dict[str, int]:
    """Goals, conversations and whole and streamed turns through the balancer; what was
    sent, by kind."""
    sent = {"requests": 1, "turns": 0}  # the fixture's goal
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def conversation() -> None:
            answer = await http.post("/v1/conversations/", json={"goal_id": "replicas"})
            answer.raise_for_status()
            sent["requests"] += 1
            path = f"/v1/conversations/{answer.json()['id']}/messages"
            for stream in (False, True, False):
                turn = await http.post(path, json={"content": "hello", "stream": stream})
                assert turn.status_code == 200
                sent["requests"] += 1
                sent["turns"] += 1

        await asyncio.gather(*(conversation() for _ in range(12)))
    return sent


def test_what_clients_did_is_what_victoria_metrics_says(stack: Replicas) -> None:
    sent = asyncio.run(_traffic(stack.balancer_url))
    # Every replica served some of it (round robin), and each is scraped on its own.
    per_replica = 'sum by (instance) (http_requests_total{path="/v1/conversations/"}) > 0'
    wait_until(lambda: len(_query(stack.prometheus_url, per_replica)) == 3, timeout=60)
    # The long-term store, through remote_write, sums the replicas to the client's counts
    # (health checks and scrapes are not the clients').
    requests = 'sum(http_requests_total{job="parley", path!~"/metrics|/readyz|/healthz"})'
    turns = 'sum(conversation_turns_total{job="parley", outcome="ok"})'
    wait_until(lambda: _scalar(stack.victoria_url, requests) == sent["requests"], timeout=60)
    wait_until(lambda: _scalar(stack.victoria_url, turns) == sent["turns"], timeout=60)
    # Prometheus' external labels arrive with every sample.
    labelled = _query(stack.victoria_url, f"count by (cluster, env) ({turns.removeprefix('sum')})")
    assert labelled[0]["metric"] == EXTERNAL_LABELS


def test_every_dashboard_query_answers_from_victoria_metrics(stack: Replicas) -> None:
    empty: list[str] = []

    def answered() -> bool:
        # A little traffic each time: rates need samples from more than one scrape, and
        # recording rules reach the store a scrape and an evaluation later.
        asyncio.run(_more_traffic(stack.balancer_url))
        empty.clear()
        for expr in all_queries():
            if not _query(stack.victoria_url, with_everything_selected(expr)):
                empty.append(expr)
        return not empty

    wait_until(answered, empty, timeout=120)


async def _more_traffic(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        answer = await http.post("/v1/conversations/", json={"goal_id": "replicas"})
        path = f"/v1/conversations/{answer.json()['id']}/messages"
        await http.post(path, json={"content": "again"})
        await http.post(path, json={"content": "again", "stream": True})
        # Errors too, or the error panels have nothing to show.
        await http.get("/v1/conversations/00000000-0000-0000-0000-000000000000")
        # The handoff row: one worked and completed by an agent (development mode names it
        # in a header), one left waiting, one abandoned, one closed by its customer.
        agent = {"x-parley-agent": "ann"}
        worked, waiting, left = [
            (await http.post("/v1/conversations/", json={"goal_id": "replicas"})).json()["id"]
            for _ in range(3)
        ]
        for conversation in (worked, waiting, left):
            await http.post(f"/v1/conversations/{conversation}/escalate", json={})
        await http.post(f"/v1/conversations/{worked}/assign", headers=agent)
        reply = {"content": "Ann here"}
        await http.post(f"/v1/conversations/{worked}/messages", json=reply, headers=agent)
        done = {"return_to_bot": False}
        await http.post(f"/v1/conversations/{worked}/resolve", json=done, headers=agent)
        await http.post(f"/v1/conversations/{left}/close")
        # The goals row: outcomes reported (achieved, not achieved) and one for the judge.
        await http.post(f"/v1/conversations/{answer.json()['id']}/close")
        for outcome in ("achieved", "not_achieved"):
            ended = (await http.post("/v1/conversations/", json={"goal_id": "replicas"})).json()
            await http.post(f"/v1/conversations/{ended['id']}/messages", json={"content": "hi"})
            closing = {"outcome": outcome}
            await http.post(f"/v1/conversations/{ended['id']}/close", json=closing)


def test_concurrent_turns_on_one_conversation_through_every_replica_stay_consistent(
    stack: Replicas,
) -> None:
    async def run() -> tuple[list[int], list[dict[str, Any]]]:
        async with httpx.AsyncClient(base_url=stack.balancer_url, timeout=30) as http:
            await http.post(
                "/v1/goals/",
                json={
                    "name": "Five turns",
                    "instructions": "Answer.",
                    "escalation": {"max_turns": 5, "trigger_phrases": ["human"]},
                },
            )
            created = await http.post("/v1/conversations/", json={"goal_id": "five-turns"})
            conversation = created.json()["id"]
            path = f"/v1/conversations/{conversation}/messages"
            answers = await asyncio.gather(
                *(http.post(path, json={"content": f"message {i}"}) for i in range(20))
            )
            stored = (await http.get(f"/v1/conversations/{conversation}")).json()["messages"]
            return [a.status_code for a in answers], stored

    statuses, messages = asyncio.run(run())
    # Five turns are answered and the sixth escalates (max_turns); the rest are stored for
    # the human agent (202), whichever replica took them.
    assert sorted(statuses) == [200] * 6 + [202] * 14
    users = [m for m in messages if m["role"] == "user"]
    replies = [m for m in messages if m["role"] == "assistant"]
    assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1))
    assert len(users) == 20
    assert len({m["content"] for m in users}) == 20  # no duplicates
    assert len(replies) == 5
    assert len({r["reply_to"] for r in replies}) == 5
    assert {r["reply_to"] for r in replies} <= {u["id"] for u in users}


def test_one_replica_dying_warns_about_it_alone_and_the_others_keep_serving(
    stack: Replicas,
) -> None:
    stack.kill("parley-2")
    dead = stack.replica_urls[1].removeprefix("http://")

    async def keep_serving() -> list[int]:
        async with httpx.AsyncClient(base_url=stack.balancer_url, timeout=30) as http:
            return [(await http.get("/v1/goals/")).status_code for _ in range(30)]

    assert asyncio.run(keep_serving()) == [200] * 30

    def alerts() -> dict[str, list[dict[str, Any]]]:
        listed = httpx.get(f"{stack.prometheus_url}/api/v1/alerts", timeout=10).json()
        by_name: dict[str, list[dict[str, Any]]] = {}
        for alert in listed["data"]["alerts"]:
            by_name.setdefault(alert["labels"]["alertname"], []).append(alert)
        return by_name

    # ParleyTargetDown waits 5 minutes before firing: pending is what a test can see.
    wait_until(lambda: "ParleyTargetDown" in alerts(), timeout=60)
    (target_down,) = alerts()["ParleyTargetDown"]
    assert target_down["labels"]["instance"] == dead
    assert target_down["labels"]["severity"] == "warning"
    assert "ParleyDown" not in alerts()  # two of three still answer


def test_a_key_limited_to_60_rpm_gets_60_a_minute_across_three_replicas(
    stack: Replicas,
) -> None:
    """Counted in Redis once for the deployment: 180 requests spread over the three
    replicas, 60 accepted (not 60 per replica), and the rest 429 with Retry-After. Last in
    this module: the first key made closes the open development API for good."""
    if stack.processes["parley-2"].popen.poll() is not None:  # the test above killed it
        port = stack.replica_urls[1].rsplit(":", 1)[1]
        parley = str(Path(sys.executable).with_name("parley"))
        stack.start("parley-2", [parley, "serve", "--port", port], stack.parley_env)
        stack.wait_until_up("parley-2", f"{stack.replica_urls[1]}/readyz")
    made = httpx.post(
        f"{stack.balancer_url}/v1/keys/", json={"name": "limited", "role": "client", "rpm": 60}
    )
    assert made.status_code == 201, made.text
    headers = {"Authorization": f"Bearer {made.json()['secret']}"}

    async def spread() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            return [await http.get(f"{stack.replica_urls[n % 3]}/v1/goals/") for n in range(180)]

    answers = asyncio.run(spread())
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {200, 429}
    assert 54 <= statuses.count(200) <= 66  # 60, within 10 %
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
