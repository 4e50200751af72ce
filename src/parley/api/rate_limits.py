"""Rate limits for ``/v1``: a request budget per API key (per client address with auth
off; a key's own ``rpm`` when it has one), and a budget of failed keys per client
address, so that guessing keys is slow.

Counted by a ``parley.limiter.Limiter``: in this process (N replicas or workers allow N
times the limit), or in Redis with ``PARLEY_REDIS_URL``, once for the whole deployment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from parley.domain.recent_checks import RecentChecks
from parley.limiter import Limiter

REQUESTS = "requests"
AUTH_FAILURES = "auth_failures"


class RateLimitedError(Exception):
    def __init__(self, code: str, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_seconds = max(1, math.ceil(retry_after))


@dataclass(frozen=True, slots=True)
class RateLimits:
    limiter: Limiter
    per_minute: int  # requests per identity; 0: no limit (but a key's own rpm)
    auth_failures_per_minute: int  # 0: no limit
    # Addresses found within their failed-key budget lately, not asked about again for a
    # second (with Redis, a round trip saved on each of a busy client's requests). A failed
    # key from one forgets it at once, so a guesser is asked about on every try: what the
    # limit can miss is one try per replica while a good key from the same address was
    # checked in the last second, and the tries in flight.
    checked: RecentChecks = field(default_factory=RecentChecks)

    async def check_address(self, address: str) -> None:
        """Refuse an address that spent its budget of failed keys, key or no key."""
        if not self.auth_failures_per_minute or self.checked.fresh(address):
            return
        wait = await self.limiter.wait(AUTH_FAILURES, address, self.auth_failures_per_minute)
        if wait:
            raise RateLimitedError(
                "too_many_auth_failures", "too many invalid API keys from this address", wait
            )
        self.checked.remember(address)

    async def failed_key(self, address: str) -> None:
        if self.auth_failures_per_minute:
            self.checked.forget(address)
            await self.limiter.hit(AUTH_FAILURES, address, self.auth_failures_per_minute)

    async def take(self, identity: str, per_minute: int | None = None) -> None:
        """One request by ``identity``, against ``per_minute`` (a key's rpm) or the
        default."""
        limit = per_minute or self.per_minute
        if limit and (wait := await self.limiter.hit(REQUESTS, identity, limit)):
            raise RateLimitedError("too_many_requests", "request rate limit reached", wait)
