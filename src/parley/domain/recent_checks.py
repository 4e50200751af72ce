"""What a limit check found lately, so that a busy caller is not asked about on every
request: with the limits in Redis, each check saved is a round trip saved.

An identity found within its limit is taken as within it for ``seconds`` (one second by
default), unless forgotten first: by a failed key from the address, by a charge that went
over the limit. What that can let through is the requests of that second made elsewhere
(other replicas), or made here while a charge that goes over is still on its way; after
that, every check goes to the limiter again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

RECENT_SECONDS = 1.0
MAX_IDENTITIES = 10_000


class RecentChecks:
    """Identities found within a limit lately (bounded: when full, it starts over, which
    costs one check each)."""

    def __init__(
        self,
        seconds: float = RECENT_SECONDS,
        *,
        max_identities: int = MAX_IDENTITIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seconds = seconds
        self._max = max_identities
        self._until: dict[str, float] = {}
        self._clock = clock

    def __len__(self) -> int:
        return len(self._until)

    def fresh(self, identity: str) -> bool:
        until = self._until.get(identity)
        return until is not None and until > self._clock()

    def remember(self, identity: str) -> None:
        if len(self._until) >= self._max and identity not in self._until:
            self._until.clear()
        self._until[identity] = self._clock() + self._seconds

    def forget(self, identity: str) -> None:
        self._until.pop(identity, None)
