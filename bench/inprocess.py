"""Per-request cost of each variant, calling the ASGI app directly: no network, no client.

Variants are interleaved within each round, so drift on a noisy machine hits them all
alike; overhead is the paired difference to the bare app in the same round.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message

from bench.stats import median, paired_overheads, spread
from bench.variants import PEERS, VARIANTS

KINDS = {
    "matched": ("GET", "/things3/42"),
    "unmatched": ("GET", "/no/such/path"),
    "streaming": ("GET", "/stream"),
    "raises": ("GET", "/boom"),
}


def _scope(method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
        "state": {},
    }


_REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


def _receiver() -> Any:
    """Like a server: the body once, then nothing until the client goes (it never does)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return _REQUEST
        # A future nothing completes, on this run's loop (a module-level Event bound
        # itself to the first run's and failed the next asyncio.run).
        await asyncio.get_running_loop().create_future()
        return {"type": "http.disconnect"}

    return receive


async def _send(message: Message) -> None:
    return None


async def _call(app: ASGIApp, method: str, path: str) -> None:
    try:  # noqa: SIM105  # in the timed loop: cheaper than contextlib.suppress
        await app(_scope(method, path), _receiver(), _send)
    except ValueError:
        pass  # /boom: Starlette answers 500 and re-raises to the server


async def _time(app: ASGIApp, method: str, path: str, requests: int) -> float:
    """Microseconds per request."""
    started = time.perf_counter_ns()
    for _ in range(requests):
        await _call(app, method, path)
    return (time.perf_counter_ns() - started) / requests / 1000


@dataclass
class Result:
    kind: str
    variant: str
    per_request_us: float
    overhead_us: float
    overhead_spread: tuple[float, float]


async def _lifespan_ready(app: Any) -> None:
    # Build the middleware stack once, outside the timed loop, as a server would.
    await _call(app, "GET", "/static/0")


async def run(
    rounds: int = 15,
    requests: int = 2000,
    kinds: tuple[str, ...] = tuple(KINDS),
    variants: Mapping[str, Callable[[], ASGIApp]] = VARIANTS,
) -> list[Result]:
    """Each variant's cost per request; ``variants`` must hold ``bare``."""
    apps = {name: factory() for name, factory in variants.items()}
    for app in apps.values():
        await _lifespan_ready(app)
    results = []
    for kind in kinds:
        method, path = KINDS[kind]
        timings: dict[str, list[float]] = {name: [] for name in apps}
        for app in apps.values():  # warm-up
            await _time(app, method, path, max(50, requests // 10))
        for _ in range(rounds):
            gc.collect()
            for name, app in apps.items():
                timings[name].append(await _time(app, method, path, requests))
        for name in apps:
            overheads = paired_overheads(timings[name], timings["bare"])
            results.append(
                Result(kind, name, median(timings[name]), median(overheads), spread(overheads))
            )
    return results


def report(results: list[Result]) -> list[str]:
    lines = ["In-process, per request (µs): median, overhead vs bare (paired, median [IQR])"]
    for kind in dict.fromkeys(r.kind for r in results):
        lines.append(f"  {kind}:")
        rows = [r for r in results if r.kind == kind]
        best_peer = min((r.overhead_us for r in rows if r.variant in PEERS), default=float("nan"))
        for r in rows:
            low, high = r.overhead_spread
            ratio = ""
            if r.variant == "parley" and best_peer > 0:
                ratio = f"  = {r.overhead_us / best_peer:.2f} of the best peer's overhead"
            lines.append(
                f"    {r.variant:<19} {r.per_request_us:8.1f}  +{r.overhead_us:6.1f} "
                f"[{low:6.1f}, {high:6.1f}]{ratio}"
            )
    return lines


if __name__ == "__main__":
    print("\n".join(report(asyncio.run(run()))))
