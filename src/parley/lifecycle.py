"""Graceful shutdown: on SIGTERM (or Ctrl-C) turns in flight get to finish before the server
closes connections, the same way on every channel.

Uvicorn, left alone, closes WebSockets at once (code 1012, their replies dropped) and
waits on SSE streams without a bound. So the first signal starts the app's drain, and only
when it is done is the signal handed to uvicorn; a second signal hands it over at once.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Drain = Callable[[], Coroutine[Any, Any, None]]


def drain_before_exit(drain: Drain) -> Callable[[], None]:
    """Run ``drain`` on the first SIGINT/SIGTERM, then pass the signal on; returns an undo.

    Only the main thread receives signals: elsewhere (a server in a test thread) this does
    nothing, and the drain is the caller's to run.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}
    draining: list[asyncio.Task[None]] = []

    def pass_on(sig: int, frame: FrameType | None) -> None:
        handler = previous[sig]
        if callable(handler):
            handler(sig, frame)
        else:
            signal.signal(sig, handler)
            signal.raise_signal(sig)

    async def drain_then_pass_on(sig: int, frame: FrameType | None) -> None:
        try:
            await drain()
        finally:
            pass_on(sig, frame)

    def on_signal(sig: int, frame: FrameType | None) -> None:
        if draining:
            pass_on(sig, frame)  # asked twice: stop waiting
            return
        draining.append(loop.create_task(drain_then_pass_on(sig, frame)))

    def start_drain(sig: int, frame: FrameType | None) -> None:
        # Signal handlers run between bytecodes: schedule, don't act, from inside one.
        loop.call_soon_threadsafe(on_signal, sig, frame)

    for sig in HANDLED_SIGNALS:
        signal.signal(sig, start_drain)

    def undo() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return undo
