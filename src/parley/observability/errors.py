"""How an app tells the HTTP metrics which error a response carries.

An exception handler calls ``mark_error(scope, type, code)``; the middleware reads it
after the response and counts ``api_errors_total``. Both values must come from a
fixed set in the app's code, never from user input.
"""

from __future__ import annotations

from starlette.types import Scope

_STATE_KEY = "observability.error"


def mark_error(scope: Scope, error_type: str, error_code: str) -> None:
    scope.setdefault("state", {})[_STATE_KEY] = (error_type, error_code)


def marked_error(scope: Scope) -> tuple[str, str] | None:
    state = scope.get("state")
    if not state:
        return None
    error: tuple[str, str] | None = state.get(_STATE_KEY)
    return error
