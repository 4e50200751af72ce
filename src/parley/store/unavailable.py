"""Which failures of the database mean "unavailable, retry shortly" (a 503), and of what
kind: the driver's and SQLAlchemy's exceptions, read once, in one place."""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa

# Read from the driver's message where no exception class says it (SQLite's, asyncpg's
# wrapped by SQLAlchemy); lower case.
_BY_MESSAGE = (
    ("disk is full", "disk_full"),
    ("no space left", "disk_full"),
    ("readonly database", "read_only"),
    ("read-only transaction", "read_only"),
    ("database is locked", "timeout"),
    ("statement timeout", "timeout"),
    ("timed out", "timeout"),
    ("timeout", "timeout"),
    ("connection refused", "refused"),
    ("connect call failed", "refused"),
    ("connection was closed", "reset"),
    ("connection reset", "reset"),
    ("connection is closed", "reset"),
    ("server closed the connection", "reset"),
    ("terminating connection", "reset"),
)


def unavailable_kind(error: BaseException) -> str | None:
    """The kind of unavailability ``error`` is, or None when it is not one (a constraint,
    a bug): those keep their own meaning."""
    if isinstance(error, sa.TimeoutError):  # no connection free in the pool in time
        return "timeout"
    if isinstance(error, sa.DBAPIError):
        if isinstance(error, sa.IntegrityError | sa.ProgrammingError | sa.DataError):
            return None
        cause: BaseException = error.orig if error.orig is not None else error
        kind = _kind_of(cause)
        if kind is not None:
            return kind
        if error.connection_invalidated:
            return "reset"
        return "other" if isinstance(error, sa.OperationalError | sa.InterfaceError) else None
    if isinstance(error, OSError | TimeoutError | sqlite3.OperationalError):
        return _kind_of(error) or "other"
    return None


def _kind_of(error: BaseException) -> str | None:
    if isinstance(error, ConnectionRefusedError):
        return "refused"
    if isinstance(error, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(error, TimeoutError):
        return "timeout"
    text = f"{type(error).__name__}: {error}".lower()
    for fragment, kind in _BY_MESSAGE:
        if fragment in text:
            return kind
    if "connectiondoesnotexist" in text or "connectionfailure" in text:
        return "reset"
    return None
