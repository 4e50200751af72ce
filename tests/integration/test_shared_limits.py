"""Rate limits counted once for the whole deployment, in a real Redis: two limiters (two
replicas) share one limit; Redis gone, the limiter fails open or closed as configured,
fast, counted; Redis back, the limits hold again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.websockets import WebSocketDisconnect
from structlog.testing import capture_logs

from parley.limiter import LimiterUnavailableError, RedisLimiter
from tests.conftest import app_client, make_settings
from tests.support.ports import free_port
from tests.support.processes import stop
from tests.support.tools import require_tool
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

MACHINE_REDIS = "redis://127.0.0.1:6379/0"


def _prefix() -> str:
    return f"parley-test-{uuid.uuid4().hex[:12]}"  # the machine's Redis is shared


class OwnRedis:
    """A redis-server of the test's own, on a free port, to stop and start."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_tool("redis-server")
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        wait_until(client.ping, "redis-server", ignoring=(redis.ConnectionError,))
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, timeout=10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_two_replicas_share_one_limit_in_redis() -> None:
    prefix = _prefix()
    one, two = (RedisLimiter(MACHINE_REDIS, key_prefix=prefix) for _ in range(2))
    try:
        answers = [await (one if n % 2 else two).hit("requests", "key:shop", 10) for n in range(30)]
        assert sum(wait == 0 for wait in answers) == 10  # not 20: one count for both
        assert all(0 < wait <= 60 for wait in answers[10:])  # a refusal is never a 0 wait
        assert await one.wait("requests", "key:shop", 10) > 0
        assert await two.hit("requests", "key:other", 10) == 0  # per identity
        # Tokens already spent are charged past the limit: the next check waits.
        # A charge says whether it fitted (a caller forgets a key it had found within).
        assert await one.charge("tokens", "key:shop", 1000, 800) is True
        assert await two.wait("tokens", "key:shop", 1000) == 0
        assert await two.charge("tokens", "key:shop", 1000, 800) is False
        assert await one.wait("tokens", "key:shop", 1000) > 0
    finally:
        await one.reset()
        await one.aclose()
        await two.aclose()


async def test_redis_gone_fails_open_or_closed_as_configured_and_recovers(
    own_redis: OwnRedis,
) -> None:
    errors: list[int] = []
    prefix = _prefix()
    open_limiter = RedisLimiter(
        own_redis.url, key_prefix=prefix, on_error=lambda: errors.append(1), clock=lambda: now[0]
    )
    closed = RedisLimiter(own_redis.url, key_prefix=prefix, fail_open=False, clock=lambda: now[0])
    now = [0.0]
    try:
        await _fail_and_recover(own_redis, open_limiter, closed, errors, now)
    finally:
        await open_limiter.aclose()
        await closed.aclose()


async def _fail_and_recover(
    own_redis: OwnRedis,
    open_limiter: RedisLimiter,
    closed: RedisLimiter,
    errors: list[int],
    now: list[float],
) -> None:
    for _ in range(3):
        assert await open_limiter.hit("requests", "key:shop", 3) == 0
    assert await closed.hit("requests", "key:shop", 3) > 0  # the shared count: 3 taken

    own_redis.stop()
    assert await open_limiter.hit("requests", "key:shop", 3) == 0  # let through
    assert errors == [1]
    assert await open_limiter.hit("requests", "key:shop", 3) == 0
    assert errors == [1]  # Redis is left alone for a second after a failure
    with pytest.raises(LimiterUnavailableError):
        await closed.hit("requests", "key:shop", 3)
    with pytest.raises(LimiterUnavailableError):
        await closed.wait("requests", "key:shop", 3)

    own_redis.start()  # an empty Redis: the counts start again
    now[0] += 2.0
    for _ in range(3):
        assert await open_limiter.hit("requests", "key:shop", 3) == 0
    assert await open_limiter.hit("requests", "key:shop", 3) > 0  # limits hold again
    assert await closed.wait("requests", "key:shop", 3) > 0
    assert errors == [1]


async def test_a_hung_redis_is_given_up_on_after_the_timeout_not_waited_for(
    own_redis: OwnRedis,
) -> None:
    """Redis that takes the connection but never answers (the process stopped, a network
    black hole): each call is given up after ``REDIS_TIMEOUT_SECONDS``, counted as a
    failure, answered as configured; once Redis answers again, so do the limits."""
    errors: list[int] = []
    now = [0.0]
    limiter = RedisLimiter(
        own_redis.url, key_prefix=_prefix(), on_error=lambda: errors.append(1),
        clock=lambda: now[0],
    )  # fmt: skip
    process = own_redis.process
    assert process is not None
    try:
        assert await limiter.hit("requests", "key:shop", 2) == 0  # connected
        process.send_signal(signal.SIGSTOP)
        try:
            # A hang here would last until the deadline; the limiter gives up long before.
            async with asyncio.timeout(20):
                assert await limiter.charge("tokens", "key:shop", 100, 5) is True
            assert errors == [1]
        finally:
            process.send_signal(signal.SIGCONT)
        now[0] += 2.0
        async with asyncio.timeout(20):
            assert await limiter.hit("requests", "key:shop", 2) == 0
            assert await limiter.hit("requests", "key:shop", 2) > 0  # the count held
        assert errors == [1]
    finally:
        await limiter.aclose()


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_the_api_with_redis_stopped_mid_run_answers_as_configured_and_never_500(
    own_redis: OwnRedis, tmp_path: Path, mode: str
) -> None:
    """A key limited to 3 a minute through the API: with Redis gone, requests are let
    through (open) or answered 503 with Retry-After (closed), counted and logged, never
    a 500; a WebSocket turn too. With Redis back, the limit holds again."""
    settings = make_settings(
        tmp_path,
        api_keys="bootstrap-secret",
        redis_url=own_redis.url,
        redis_key_prefix=_prefix(),
        rate_limit_failure_mode=mode,
    )
    admin = {"Authorization": "Bearer bootstrap-secret"}
    with app_client(settings) as client:
        made = client.post(
            "/v1/keys/", json={"name": "shop", "role": "client", "rpm": 3}, headers=admin
        )
        headers = {"Authorization": f"Bearer {made.json()['secret']}"}
        assert [client.get("/v1/goals/", headers=headers).status_code for _ in range(4)] == [
            200, 200, 200, 429
        ]  # fmt: skip

        own_redis.stop()
        with capture_logs() as logs:
            answers = [client.get("/v1/goals/", headers=headers) for _ in range(5)]
        expected = 200 if mode == "open" else 503
        assert [answer.status_code for answer in answers] == [expected] * 5
        if mode == "closed":
            body = answers[0].json()["error"]
            assert body["code"] == "rate_limiter_unavailable"
            assert answers[0].headers["Retry-After"] == "1"
            with (
                pytest.raises(WebSocketDisconnect) as closed,
                client.websocket_connect("/v1/conversations/x/ws", headers=headers),
            ):
                pass
            assert closed.value.code == 1013
        assert [e["event"] for e in logs].count("rate_limiter_unavailable") == 1
        errors = _sample(client.get("/metrics").text, "rate_limiter_errors_total")
        assert errors is not None
        assert errors >= 1

        own_redis.start()  # an empty Redis: counts start afresh once it is tried again
        wait_until(
            lambda: client.get("/v1/goals/", headers=headers).status_code == 429,
            "the limit holding again",
            timeout=30,
        )


def _sample(metrics: str, name: str) -> float | None:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None
