"""Rate limits: per API key (per client address with auth off), and on failed keys per
client address; each refusal a 429 with Retry-After in the error shape, and counted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from parley.api.rate_limits import RateLimitedError, RateLimits
from parley.domain.recent_checks import RecentChecks
from parley.limiter import TokenBuckets
from tests.conftest import app_client, make_settings
from tests.support.limiters import CountingLimiter
from tests.support.metrics import FakeClock


def test_wrong_keys_from_one_address_are_refused_after_the_budget(tmp_path: Path) -> None:
    """3,000 wrong keys at 114 req/s all got 401: guessing was free."""
    settings = make_settings(tmp_path, api_keys="sekret", auth_failures_per_minute=5)
    with app_client(settings) as client:
        codes = [
            client.get("/v1/goals/", headers={"Authorization": f"Bearer guess{i}"}).status_code
            for i in range(8)
        ]
        assert codes == [401] * 5 + [429] * 3
        refused = client.get("/v1/goals/", headers={"Authorization": "Bearer sekret"})
        assert refused.status_code == 429  # the address is out of tries, even with the key
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "too_many_auth_failures"
        assert client.get("/healthz").status_code == 200
        scrape = client.get("/metrics").text
    assert 'error_code="too_many_auth_failures"' in scrape


async def test_an_address_checked_lately_is_not_asked_again_until_a_key_from_it_fails() -> None:
    clock = FakeClock()
    limiter = CountingLimiter(clock)
    limits = RateLimits(limiter, 0, 3, RecentChecks(clock=clock))
    for _ in range(5):  # a busy client with a good key: asked once a second
        await limits.check_address("10.0.0.1")
    assert limiter.checks == 1
    clock.advance(1.5)
    await limits.check_address("10.0.0.1")
    assert limiter.checks == 2
    for _ in range(3):  # a guesser from the same address: asked at every try
        await limits.check_address("10.0.0.1")
        await limits.failed_key("10.0.0.1")
    assert limiter.checks == 4
    with pytest.raises(RateLimitedError):  # and refused once its tries are spent
        await limits.check_address("10.0.0.1")


def test_each_key_has_its_own_request_budget(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, api_keys="one,two", rate_limit_per_minute=1, rate_limit_burst=3
    )
    with app_client(settings) as client:
        one = {"Authorization": "Bearer one"}
        codes = [client.get("/v1/goals/", headers=one).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = client.get("/v1/goals/", headers=one)
        assert refused.json()["error"]["code"] == "too_many_requests"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert client.get("/v1/goals/", headers={"X-API-Key": "two"}).status_code == 200


def test_with_auth_off_the_budget_is_per_client_address(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, rate_limit_per_minute=1, rate_limit_burst=2)
    with app_client(settings) as client:
        codes = [client.get("/v1/goals/").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert client.get("/readyz").status_code == 200  # probes are never limited


def test_buckets_refill_with_time_and_stay_bounded_in_number() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(per_minute=60, burst=2, max_identities=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 1.0]
    clock.advance(1.0)
    assert buckets.take("a") == 0.0
    for identity in "bcdef":
        buckets.take(identity)
    assert len(buckets) == 3


def test_a_spent_budget_survives_the_eviction_of_other_identities() -> None:
    """The table keeps 10,000 identities, least recently seen out first: an address whose
    failed-key budget was spent got a fresh one once 10,000 others had been seen. Buckets
    nearest to full go first now, and a spent one is kept until it has refilled."""
    clock = FakeClock()
    buckets = TokenBuckets(per_minute=20, burst=20, max_identities=100, clock=clock)
    for _ in range(20):
        buckets.take("attacker")
    for index in range(1000):  # fresh identities, one guess each
        buckets.take(f"address-{index}")
    assert len(buckets) == 100
    assert buckets.wait("attacker") > 0
    clock.advance(60)  # refilled: forgetting it now loses nothing
    for index in range(1000, 1200):
        buckets.take(f"address-{index}")
    assert len(buckets) == 100


def test_each_websocket_message_takes_a_token_and_refusals_keep_the_socket(
    tmp_path: Path,
) -> None:
    """The limit was taken once, at the handshake: one socket sent 60 messages under a
    burst-5 limit and got 60 LLM replies. Now each message takes a token, as an HTTP turn
    does; a refused one gets an error frame with the wait, and the socket stays open."""
    settings = make_settings(tmp_path, rate_limit_per_minute=1, rate_limit_burst=5)
    with app_client(settings) as client:
        goal = {"id": "g", "name": "G", "instructions": "Help.", "escalation": {"max_turns": 100}}
        client.post("/v1/goals/", json=goal)
        conversation = client.post("/v1/conversations/", json={"goal_id": "g"}).json()["id"]
        ends: list[dict[str, object]] = []
        with client.websocket_connect(f"/v1/conversations/{conversation}/ws") as socket:
            for index in range(60):
                socket.send_json({"type": "message", "content": f"m{index}"})
                ending = ("done", "error", "escalated")
                while (frame := socket.receive_json())["type"] not in ending:
                    pass
                ends.append(frame)
            socket.send_json({"type": "ping"})
            assert socket.receive_json() == {"type": "pong"}
        answered = [end for end in ends if end["type"] == "done"]
        refused = [end for end in ends if end["type"] == "error"]
        # The handshake and two POSTs took 3 of the 5; a minute's refill may add one.
        assert 2 <= len(answered) <= 3
        assert {end["code"] for end in refused} == {"too_many_requests"}
        assert all(int(str(end["retry_after"])) >= 1 for end in refused)
    # Read from the file: the API would take a token too.
    with sqlite3.connect(tmp_path / "parley.db") as database:
        (stored,) = database.execute("SELECT count(*) FROM messages WHERE role = 'user'").fetchone()
    assert stored == len(answered)
