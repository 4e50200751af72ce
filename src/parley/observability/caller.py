"""The API key the work under way is done for, as a metric label (``key_name``).

A context variable: set once per request when the key is known, it follows the request
into the tasks it starts (a turn's LLM call), so the metrics that count per key need no
key passed down through every layer. Empty when no key is in use (development mode)."""

from __future__ import annotations

from contextvars import ContextVar

_CALLER: ContextVar[str] = ContextVar("parley_caller_key_name", default="")


def set_caller(key_name: str | None) -> None:
    _CALLER.set(key_name or "")


def current_caller() -> str:
    return _CALLER.get()
