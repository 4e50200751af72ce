"""A rate limiter for tests that counts what it is asked."""

from __future__ import annotations

from parley.limiter import LocalLimiter
from tests.support.metrics import FakeClock


class CountingLimiter(LocalLimiter):
    """In process, on a clock the test moves, counting the checks (``wait``) it is asked:
    each one a round trip with Redis."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.checks = 0

    async def wait(self, name: str, identity: str, per_minute: int) -> float:
        self.checks += 1
        return await super().wait(name, identity, per_minute)
