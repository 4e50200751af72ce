"""Event-loop lag: how late the loop runs a timer. Anything that blocks the loop (CPU
work, a sync call) delays every request and stream of the process by as much."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from prometheus_client import Gauge


async def watch_event_loop_lag(gauge: Gauge, interval_seconds: float = 0.5) -> None:
    """Set ``gauge`` to the lag of each ``interval_seconds`` timer, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_seconds
        await asyncio.sleep(interval_seconds)
        gauge.set(max(0.0, loop.time() - due))


@contextlib.asynccontextmanager
async def event_loop_lag_watched(
    gauge: Gauge, interval_seconds: float = 0.5
) -> AsyncIterator[None]:
    """Watch the lag while the block runs (an app's lifespan)."""
    watcher = asyncio.create_task(watch_event_loop_lag(gauge, interval_seconds))
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
