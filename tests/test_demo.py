"""``parley demo``: traffic of every kind against a running Parley, failures on request."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from parley import demo
from parley.api.schemas import ConversationDetail
from parley.app import create_app
from parley.cli import main
from parley.client import ParleyClient
from parley.domain.models import HandoffState
from parley.llm import Role
from tests.conftest import make_settings
from tests.support.live_server import LiveServer
from tests.support.metrics import value
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_demo_drives_whole_sse_and_websocket_turns_and_fails_some_on_request(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        tmp_path,
        sim_ttft_seconds=0,
        sim_token_delay_seconds=0,
        llm_max_retries=0,
        judge_poll_seconds=0.05,
    )
    app = create_app(settings)
    registry: CollectorRegistry = app.state.instrumentation.registry
    with LiveServer(app) as server:
        out = io.StringIO()
        plan = demo.Plan(server.http_url, 3, 120, 40, 0.3, None, "http://dash.example/")
        progress = asyncio.run(demo.run(plan, out))
        closed = asyncio.run(_closed_conversations(server.http_url))
        wait_until(
            lambda: (
                value(registry, "goal_evaluations_total", goal_id="demo-orders", label="achieved")
                or value(
                    registry, "goal_evaluations_total", goal_id="demo-orders", label="not_achieved"
                )
            ),
            "the judge's first verdicts",
        )
        orders = httpx.get(f"{server.http_url}/v1/goals/demo-orders/outcomes").json()
        demo_goal = httpx.get(f"{server.http_url}/v1/goals/demo-orders").json()
    assert progress.turns >= 40
    assert progress.outcomes["error"] > 0  # the failures asked for
    assert progress.outcomes["ok"] > 0
    assert "turns/s" in out.getvalue()
    # A summary by channel and outcome whose numbers add up, and the dashboard to watch.
    printed = out.getvalue()
    assert printed.startswith("watch it on http://dash.example/")
    assert printed.rstrip().endswith("dashboard: http://dash.example/")
    table = {
        line.split()[0]: [int(n) for n in line.split()[1:]]
        for line in progress.summary().splitlines()[1:5]
    }
    assert progress.summary() in printed
    for row in table.values():
        assert sum(row[:-1]) == row[-1]
    assert [sum(column) for column in zip(*(table[c] for c in demo.KINDS), strict=True)] == table[
        "total"
    ]
    assert table["total"][-1] == progress.turns
    # The conversations it finished, it closed (they no longer stay active forever).
    assert progress.conversations_closed > 0
    assert closed == progress.conversations_closed + progress.handoffs["completed"]
    # They ended with outcomes: reported on close, or (the judged goal) by its judge.
    assert progress.endings["reported"] > 0
    assert progress.endings["for_judge"] > 0
    assert "left to the judge" in printed
    assert demo_goal["judge"]["enabled"]
    assert orders["ended"] + orders["judging"] > 0
    for channel in ("http", "sse", "ws"):
        assert value(registry, "conversation_turns_total", channel=channel, outcome="ok"), channel
    failed = sum(
        value(registry, "conversation_turns_total", channel=channel, outcome="llm_error") or 0
        for channel in ("http", "sse", "ws")
    )
    # The server saw them too (a third failure in a row also escalates: the demo counts
    # that turn as escalated).
    assert failed >= progress.outcomes["error"]


async def _closed_conversations(url: str) -> int:
    closed = 0
    params: dict[str, str] = {"status": "completed", "limit": "200"}
    async with httpx.AsyncClient(base_url=url) as http:
        while True:
            page = (await http.get("/v1/conversations/", params=params)).json()
            closed += len(page["items"])
            if not page["next_cursor"]:
                return closed
            params["cursor"] = page["next_cursor"]


def test_the_demos_agents_clear_the_queue_returning_some_to_the_bot(tmp_path: Path) -> None:
    with LiveServer(create_app(make_settings(tmp_path))) as server:

        async def play() -> tuple[demo.Progress, list[ConversationDetail]]:
            async with ParleyClient(server.http_url) as customer:
                await customer.create_goal("Support", "Help.", goal_id="support")
                made = [await customer.create_conversation("support") for _ in range(6)]
                for conversation in made:
                    await customer.escalate_conversation(conversation.id)
                progress, stop = demo.Progress(), asyncio.Event()
                stop.set()  # the customers are done: clear the queue, then stop
                async with (
                    ParleyClient(server.http_url, agent="ann") as ann,
                    ParleyClient(server.http_url, agent="bob") as bob,
                ):
                    await asyncio.gather(
                        demo._agent(ann, "ann", progress, 1, stop),
                        demo._agent(bob, "bob", progress, 2, stop),
                    )
                after = [await customer.get_conversation(c.id) for c in made]
            return progress, list(after)

        progress, after = asyncio.run(play())
    handoffs = progress.handoffs
    assert handoffs["returned_to_bot"] + handoffs["completed"] == 6
    assert handoffs["returned_to_bot"] > 0
    assert handoffs["completed"] > 0
    for conversation in after:
        assert conversation.handoff is not None
        assert conversation.handoff.state is HandoffState.RESOLVED
        assert conversation.handoff.agent in ("ann", "bob")
    agents_said = [m for c in after for m in c.messages if m.role is Role.AGENT]
    assert len(agents_said) == 6


def test_demo_says_when_nothing_answers() -> None:
    assert main(["demo", "--url", "http://127.0.0.1:9", "--seconds", "1"]) == 1
