"""Memory under random unmatched paths: per-request allocations must not grow the heap."""

from __future__ import annotations

import asyncio
import gc
import random
import string
from dataclasses import dataclass
from pathlib import Path

from bench.inprocess import _call
from bench.variants import parley


def _rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Result:
    requests: int
    rss_after_warmup: int
    rss_after: int

    @property
    def growth(self) -> float:
        return self.rss_after / self.rss_after_warmup - 1


async def _storm(app: object, requests: int, rng: random.Random) -> None:
    for _ in range(requests):
        path = "/" + "/".join(
            "".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(rng.randint(1, 4))
        )
        await _call(app, rng.choice(["GET", "POST", "BREW", "PURGE"]), path)  # type: ignore[arg-type]


async def run(requests: int = 100_000, warmup: int = 10_000) -> Result:
    app = parley()
    rng = random.Random(7)
    await _storm(app, warmup, rng)
    gc.collect()
    before = _rss_bytes()
    await _storm(app, requests, rng)
    gc.collect()
    return Result(requests, before, _rss_bytes())


def report(result: Result) -> list[str]:
    return [
        f"Memory: {result.requests:,} requests to random unmatched paths after warm-up: "
        f"RSS {result.rss_after_warmup / 2**20:.1f} MiB -> {result.rss_after / 2**20:.1f} MiB "
        f"({result.growth:+.2%})"
    ]


if __name__ == "__main__":
    print("\n".join(report(asyncio.run(run()))))
