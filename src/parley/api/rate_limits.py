"""Rate limits for ``/v1``: a request budget per API key (per client address with auth
off), and a budget of failed keys per client address, so that guessing keys is slow.

Token buckets in this process: with N replicas or workers a client gets up to N times
the budget. The number of identities tracked is bounded (of the least recently seen, the
nearest to a full budget go first, so a spent budget is not forgotten while it refills).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

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

    def take(self, identity: str) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is."""
        tokens = self._tokens(identity)
        if tokens >= 1.0:
            self._store(identity, tokens - 1.0)
            return 0.0
        self._store(identity, tokens)
        return (1.0 - tokens) / self.rate

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


class RateLimitedError(Exception):
    def __init__(self, code: str, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_seconds = max(1, math.ceil(retry_after))


@dataclass(frozen=True, slots=True)
class RateLimits:
    requests: TokenBuckets | None
    auth_failures: TokenBuckets | None

    def check_address(self, address: str) -> None:
        """Refuse an address that spent its budget of failed keys, key or no key."""
        if self.auth_failures is not None and (wait := self.auth_failures.wait(address)):
            raise RateLimitedError(
                "too_many_auth_failures", "too many invalid API keys from this address", wait
            )

    def failed_key(self, address: str) -> None:
        if self.auth_failures is not None:
            self.auth_failures.take(address)

    def take(self, identity: str) -> None:
        if self.requests is not None and (wait := self.requests.take(identity)):
            raise RateLimitedError("too_many_requests", "request rate limit reached", wait)
