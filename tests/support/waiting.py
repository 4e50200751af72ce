"""Waiting on a condition with a deadline, never a fixed sleep (the machine is busy)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T],
    what: object = "the condition",
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    ignoring: tuple[type[Exception], ...] = (),
) -> T:
    """``check()``'s first truthy answer, polled until ``timeout``; an exception in
    ``ignoring`` (a server not listening yet) counts as a falsy answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            outcome = check()
        except ignoring:
            pass
        else:
            if outcome:
                return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
