"""Counting against a per-minute limit: in this process, or in Redis for every replica.

``LocalLimiter`` keeps token buckets in the process (bounded in the identities it
tracks): with N replicas or workers, N times the limit. ``RedisLimiter`` counts in Redis
with the ``limits`` library's sliding-window counter (an atomic server-side script per
hit, through redis-py), so the limit holds once for the whole deployment. When Redis
cannot be reached, it fails open (the request is let through) or closed (refused with
``LimiterUnavailableError``, answered 503), as configured, counts the failure and logs it
once per ``quiet_seconds``; it tries Redis again a second later, so an outage costs one
failed connection a second, not one per request, and limits resume when Redis is back.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import structlog
from limits import RateLimitItemPerMinute
from limits.errors import StorageError

# Redis is local to the deployment: an answer takes a millisecond; past these it is down.
REDIS_TIMEOUT_SECONDS = 0.5
# After a failure, Redis is not asked again for this long.
REDIS_RETRY_SECONDS = 1.0


# How many of the least recently seen buckets an eviction compares: a bound on its cost.
EVICTION_SCAN = 64


class TokenBuckets:
    def __init__(
        self,
        *,
        per_minute: int,
        burst: int,
        max_identities: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0  # tokens a second
        self.burst = burst
        self.max_identities = max_identities
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, identity: str, cost: int = 1) -> float:
        """Take ``cost`` tokens: 0.0 if there were as many, else the seconds until there
        are (nothing taken then)."""
        tokens = self._tokens(identity)
        if tokens >= cost:
            self._store(identity, tokens - cost)
            return 0.0
        self._store(identity, tokens)
        return (min(cost, self.burst) - tokens) / self.rate

    def spend(self, identity: str, cost: int) -> bool:
        """Take ``cost`` tokens already spent, into debt if need be: refilled before the
        next ``take`` succeeds. Whether there were as many."""
        tokens = self._tokens(identity)
        self._store(identity, tokens - cost)
        return tokens >= cost

    def wait(self, identity: str) -> float:
        """Seconds until a token is there, without taking one."""
        tokens = self._tokens(identity)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _tokens(self, identity: str) -> float:
        stored = self._buckets.get(identity)
        if stored is None:
            return float(self.burst)
        tokens, when = stored
        return min(float(self.burst), tokens + (self._clock() - when) * self.rate)

    def _store(self, identity: str, tokens: float) -> None:
        now = self._clock()
        self._buckets[identity] = (tokens, now)
        self._buckets.move_to_end(identity)
        while len(self._buckets) > self.max_identities:
            self._evict(now)

    def _evict(self, now: float) -> None:
        """Of the least recently seen few, the bucket nearest to full goes: forgetting a
        full one changes nothing, forgetting a spent one would hand out a fresh budget (a
        spent failed-key budget outlived by 10,000 other addresses was reset so)."""
        oldest = itertools.islice(self._buckets.items(), EVICTION_SCAN)
        identity, _ = max(oldest, key=lambda item: item[1][0] + (now - item[1][1]) * self.rate)
        del self._buckets[identity]


def _wait_until(reset_time: float) -> float:
    """Seconds to a refused hit's reset: never 0.0, which says "allowed" (the library's
    reset time can be this very moment, or just past it, while the count is full)."""
    return max(0.001, reset_time - time.time())


class LimiterUnavailableError(Exception):
    """The shared limiter cannot be reached and is configured to fail closed."""


class Limiter(Protocol):
    async def hit(self, name: str, identity: str, per_minute: int, cost: int = 1) -> float:
        """Count ``cost`` against ``identity``'s limit ``name``: 0.0 if it was within it,
        else the seconds until it would be (nothing counted then)."""
        ...

    async def charge(self, name: str, identity: str, per_minute: int, cost: int) -> bool:
        """Count ``cost`` that was already spent (tokens a reply used), within the limit
        or not: the next ``hit`` waits for it. Whether it fitted within the limit (True
        when that cannot be told: the limiter unreachable)."""
        ...

    async def wait(self, name: str, identity: str, per_minute: int) -> float:
        """Seconds until one more unit fits (0.0: now), counting nothing."""
        ...

    async def aclose(self) -> None: ...


class LocalLimiter:
    def __init__(
        self,
        *,
        burst: Callable[[str, int], int] = lambda name, per_minute: per_minute,
        max_identities: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._max_identities = max_identities
        self._clock = clock
        self._buckets: dict[tuple[str, int], TokenBuckets] = {}

    def _bucket(self, name: str, per_minute: int) -> TokenBuckets:
        # One set of buckets per limit and rate (rates are admin-set: few of them).
        buckets = self._buckets.get((name, per_minute))
        if buckets is None:
            buckets = self._buckets[name, per_minute] = TokenBuckets(
                per_minute=per_minute,
                burst=self._burst(name, per_minute),
                max_identities=self._max_identities,
                clock=self._clock,
            )
        return buckets

    async def hit(self, name: str, identity: str, per_minute: int, cost: int = 1) -> float:
        return self._bucket(name, per_minute).take(identity, cost)

    async def charge(self, name: str, identity: str, per_minute: int, cost: int) -> bool:
        return self._bucket(name, per_minute).spend(identity, cost)

    async def wait(self, name: str, identity: str, per_minute: int) -> float:
        return self._bucket(name, per_minute).wait(identity)

    async def aclose(self) -> None:
        return None


class RedisLimiter:
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "parley",
        fail_open: bool = True,
        on_error: Callable[[], None] = lambda: None,
        quiet_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Imported here: a deployment without Redis never loads the Redis client.
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import SlidingWindowCounterRateLimiter
        from redis.asyncio import ConnectionPool

        # Our own pool, so that closing the limiter closes its connections. No socket
        # timeout: each call is bounded whole (asyncio.timeout, below), where redis-py's
        # own bounds each write with asyncio.wait_for, a task per command (a fifth of a
        # call's CPU). A call given up on closes its connection (redis-py does so when a
        # read is cancelled), so no late answer is read as the next one.
        self._pool = ConnectionPool.from_url(
            url, socket_timeout=None, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        scheme, _, rest = url.partition("://")
        self._storage = RedisStorage(
            f"async+{scheme}://{rest}",
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=key_prefix,
            # Passed through to redis-py (limits' option type is narrower than its use).
            connection_pool=self._pool,  # type: ignore[arg-type]
        )
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)
        self.fail_open = fail_open
        self.on_error = on_error  # counts each failure (rate_limiter_errors_total)
        self._quiet = quiet_seconds
        self._clock = clock
        self._down_until = 0.0
        self._logged_at: float | None = None
        self._log = structlog.get_logger("parley.limits")

    async def hit(self, name: str, identity: str, per_minute: int, cost: int = 1) -> float:
        item = RateLimitItemPerMinute(per_minute)
        if not self._up():
            return self._unavailable()
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                if await self._strategy.hit(item, name, identity, cost=cost):
                    return 0.0
                stats = await self._strategy.get_window_stats(item, name, identity)
        except (StorageError, TimeoutError) as error:
            return self._failed(error)
        return _wait_until(stats.reset_time)

    async def charge(self, name: str, identity: str, per_minute: int, cost: int) -> bool:
        item = RateLimitItemPerMinute(per_minute)
        if not self._up():
            return True
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                if await self._strategy.hit(item, name, identity, cost=cost):
                    return True
                # Over the limit: fill what is left, so the next hit waits.
                stats = await self._strategy.get_window_stats(item, name, identity)
                if stats.remaining:
                    await self._strategy.hit(item, name, identity, cost=stats.remaining)
        except (StorageError, TimeoutError) as error:
            self._failed(error, raising=False)
            return True
        return False

    async def wait(self, name: str, identity: str, per_minute: int) -> float:
        item = RateLimitItemPerMinute(per_minute)
        if not self._up():
            return self._unavailable()
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                if await self._strategy.test(item, name, identity):
                    return 0.0
                stats = await self._strategy.get_window_stats(item, name, identity)
        except (StorageError, TimeoutError) as error:
            return self._failed(error)
        return _wait_until(stats.reset_time)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                return await self._storage.check()
        except (StorageError, TimeoutError):
            return False

    async def reset(self) -> None:
        await self._storage.reset()

    async def aclose(self) -> None:
        await self._pool.aclose()

    def _up(self) -> bool:
        return self._clock() >= self._down_until

    def _unavailable(self) -> float:
        if self.fail_open:
            return 0.0
        raise LimiterUnavailableError()

    def _failed(self, error: StorageError | TimeoutError, *, raising: bool = True) -> float:
        self._down_until = self._clock() + REDIS_RETRY_SECONDS
        self.on_error()
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= self._quiet:
            self._logged_at = now
            self._log.warning(
                "rate_limiter_unavailable",
                error_type=type(
                    error.storage_error if isinstance(error, StorageError) else error
                ).__name__,
                failing="open" if self.fail_open else "closed",
            )
        return self._unavailable() if raising else 0.0
