"""Business metrics: conversations by goal (capped), escalations by reason, active now."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.api.helpers import make_conversation, make_goal
from tests.conftest import app_client, make_settings
from tests.support.metrics import series, value
from tests.support.waiting import wait_until


def _registry(client: TestClient):  # type: ignore[no-untyped-def]
    return client.app.state.instrumentation.registry  # type: ignore[attr-defined]


def test_conversations_are_counted_by_goal(client: TestClient) -> None:
    make_goal(client, "a")
    make_goal(client, "b")
    for goal_id in ("a", "a", "b"):
        make_conversation(client, goal_id)
    registry = _registry(client)
    assert value(registry, "conversations_created_total", goal_id="a") == 2
    assert value(registry, "conversations_created_total", goal_id="b") == 1


def test_goal_label_is_capped_and_the_overflow_counted(tmp_path: Path) -> None:
    with app_client(make_settings(tmp_path, metrics_goal_label_limit=2)) as client:
        for goal_id in ("g1", "g2", "g3", "g4"):
            make_goal(client, goal_id)
            make_conversation(client, goal_id)
        registry = _registry(client)
        goals = {labels["goal_id"] for labels in series(registry, "conversations_created")}
        assert goals == {"g1", "g2", "other"}
        assert value(registry, "conversations_created_total", goal_id="other") == 2
        assert (
            value(
                registry,
                "metric_label_overflow_total",
                metric="conversations_created_total",
                label="goal_id",
            )
            == 2
        )


def test_escalations_are_counted_by_reason(client: TestClient) -> None:
    make_goal(client, max_turns=1)
    manual = make_conversation(client)
    client.post(f"/v1/conversations/{manual}/escalate", json={"reason": "manual"})
    phrase = make_conversation(client)
    client.post(f"/v1/conversations/{phrase}/messages", json={"content": "a human please"})
    turns = make_conversation(client)
    client.post(f"/v1/conversations/{turns}/messages", json={"content": "one"})
    client.post(f"/v1/conversations/{turns}/messages", json={"content": "two"})
    registry = _registry(client)
    assert value(registry, "escalations_total", reason="manual") == 1
    assert value(registry, "escalations_total", reason="trigger_phrase") == 1
    assert value(registry, "escalations_total", reason="max_turns") == 1
    # Every reason exists from the first scrape, at zero until it happens.
    assert {labels["reason"] for labels in series(registry, "escalations")} == {
        "user_request",
        "trigger_phrase",
        "max_turns",
        "llm_failure",
        "manual",
        "budget",
    }


def _active(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("conversations_active "):
            return float(line.split()[1])
    raise AssertionError("conversations_active missing")


def test_conversations_active_goes_up_and_down_and_survives_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with app_client(settings) as client:
        make_goal(client)
        ids = [make_conversation(client) for _ in range(3)]
        assert _active(client) == 3
        client.post(f"/v1/conversations/{ids[0]}/close")
        client.post(f"/v1/conversations/{ids[1]}/escalate", json={})
        assert _active(client) == 1
    with app_client(settings) as restarted:
        assert _active(restarted) == 1


def test_every_replica_labels_the_same_goals_read_from_the_goals_table(tmp_path: Path) -> None:
    """The cap holds per cluster, not per process: each replica labels the oldest goals
    in the shared table (read again every PARLEY_METRICS_GOAL_REFRESH_SECONDS), so a goal
    first seen on another replica is not labelled there just because it came first."""
    settings = make_settings(
        tmp_path, metrics_goal_label_limit=2, metrics_goal_refresh_seconds=0.05
    )
    with app_client(settings) as first:
        for goal_id in ("g1", "g2", "g3"):
            make_goal(first, goal_id)
        with app_client(settings) as second:  # another replica on the same database
            make_conversation(second, "g3")  # first on this replica, yet not among the oldest
            make_conversation(second, "g1")
            registry = _registry(second)
            goals = {labels["goal_id"] for labels in series(registry, "conversations_created")}
            assert goals == {"g1", "g2", "other"}
        # The first replica labelled first-come until its refresh read the table, with
        # both of the oldest goals in it (a refresh between g1 and g2 labels g1 alone).
        # (``value`` reads a missing series as 0, so the series' presence is asked directly.)
        registry = _registry(first)
        wait_until(
            lambda: (
                registry.get_sample_value("conversations_created_total", {"goal_id": "g2"})
                is not None
            ),
            "the first replica's refresh to label g2",
            interval=0.05,
        )
        make_conversation(first, "g3")
        assert value(registry, "conversations_created_total", goal_id="other") == 1
