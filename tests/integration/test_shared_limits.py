"""Rate limits counted once for the whole deployment, in a real Redis: two limiters (two
replicas) share one limit; Redis gone, the limiter fails open or closed as configured,
fast, counted; Redis back, the limits hold again."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from parley.limiter import LimiterUnavailableError, RedisLimiter
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
        await one.charge("tokens", "key:shop", 1000, 800)
        assert await two.wait("tokens", "key:shop", 1000) == 0
        await two.charge("tokens", "key:shop", 1000, 800)
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
