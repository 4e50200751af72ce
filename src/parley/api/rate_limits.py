"""Rate limits for ``/v1``: a request budget per API key (per client address with auth
off; a key's own ``rpm`` when it has one), and a budget of failed keys per client
address, so that guessing keys is slow.

Counted by a ``parley.limiter.Limiter``: in this process (N replicas or workers allow N
times the limit), or in Redis with ``PARLEY_REDIS_URL``, once for the whole deployment.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from parley.limiter import Limiter

REQUESTS = "requests"
AUTH_FAILURES = "auth_failures"

# An address found within its failed-key budget is not asked about again for this long
# (with Redis, a round trip saved on each of a busy client's requests). A failed key from
# it forgets it at once, so a guesser is asked about on every try: what the limit can miss
# is one try per replica while a good key from the same address was checked in the last
# second, and the tries in flight.
CHECKED_SECONDS = 1.0
MAX_CHECKED_ADDRESSES = 10_000


class CheckedAddresses:
    """Addresses whose failed-key budget was checked lately and not spent."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._until: dict[str, float] = {}
        self._clock = clock

    def fresh(self, address: str) -> bool:
        until = self._until.get(address)
        return until is not None and until > self._clock()

    def remember(self, address: str) -> None:
        if len(self._until) >= MAX_CHECKED_ADDRESSES:
            self._until.clear()  # bounded; forgetting costs only a check each
        self._until[address] = self._clock() + CHECKED_SECONDS

    def forget(self, address: str) -> None:
        self._until.pop(address, None)


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
    checked: CheckedAddresses = field(default_factory=CheckedAddresses)

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
