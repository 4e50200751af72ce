"""Label values that cannot grow without bound, whatever arrives from outside."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client import Counter

OTHER = "other"


class Allowlist:
    """Known values pass; anything else is ``other``."""

    def __init__(self, values: Iterable[str]) -> None:
        self.values = frozenset(values)

    def __call__(self, value: str) -> str:
        return value if value in self.values else OTHER


class CappedLabel:
    """Admits the first ``limit`` distinct values; later ones become ``other``.

    Each value folded into ``other`` is counted, so the cap being reached is visible
    (and alertable) instead of silently losing detail.
    """

    def __init__(self, *, metric: str, label: str, limit: int, overflow: Counter) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._overflow = overflow.labels(metric, label)

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        self._overflow.inc()
        return OTHER

    def replace(self, values: Iterable[str]) -> list[str]:
        """Admit exactly these values (up to the cap), from a source every replica shares,
        so the bound holds across replicas; returns those newly admitted."""
        chosen = list(dict.fromkeys(values))[: self.limit]
        with self._lock:
            added = [value for value in chosen if value not in self._seen]
            self._seen = set(chosen)
        return added
