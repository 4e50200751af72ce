"""Reaching the database at start-up, and when it cannot be reached, why, in one line:
where (host, port and database, or the SQLite file; never the password) and the cause."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from parley.store.database import Database
from parley.store.migrate import upgrade_to_head
from parley.store.unavailable import unavailable_kind


class DatabaseStartupError(Exception):
    """The database cannot be used at start-up; the message says where and why."""


_NO_FILE_WORDS = "cannot open the file (does its directory exist and may Parley write there?)"
# The driver's words (lower case) for what an operator must fix, checked in this order.
_CAUSES = (
    ("password authentication failed", "authentication failed (wrong password)"),
    ("no pg_hba.conf entry", "authentication refused (no pg_hba.conf entry for this client)"),
    ('role "', "authentication failed (no such role)"),
    ('database "', "unknown database (create it, or fix the name)"),
    (
        "unable to open database file",
        _NO_FILE_WORDS,
    ),
    ("name or service not known", "unknown host"),
    ("temporary failure in name resolution", "unknown host (name resolution failed)"),
    ("nodename nor servname", "unknown host"),
)
_KINDS = {
    "refused": "connection refused (is the server running and listening there?)",
    "timeout": "timed out (no answer within the connect timeout)",
    "reset": "connection reset",
    "disk_full": "disk full",
    "read_only": "the database is read-only",
}


def where(url: str) -> str:
    """The database a URL names, without its password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database or ':memory:'}"
    user = f"{parsed.username}@" if parsed.username else ""
    return f"{user}{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def cause(error: BaseException) -> str | None:
    """Why ``error`` means the database cannot be used, or None if it is some other failure
    (a bug, a broken migration), which keeps its traceback."""
    text = f"{error} {error.__cause__ or ''}".lower()
    for fragment, words in _CAUSES:
        if fragment in text and (not fragment.endswith('"') or "does not exist" in text):
            return words
    kind = unavailable_kind(error)
    if kind is None or kind == "other":
        return None
    return _KINDS[kind]


async def migrate(database: Database) -> None:
    """Bring the schema up to date; ``DatabaseStartupError`` when the database cannot be
    used."""
    if _sqlite_directory_missing(database.url):
        # Refused before aiosqlite's thread starts: failing to open, it could answer a
        # loop the CLI had already closed (a stray traceback after the one line).
        raise DatabaseStartupError(f"cannot use {where(database.url)}: {_NO_FILE_WORDS}")
    try:
        await upgrade_to_head(database.engine)
    except Exception as error:
        why = cause(error)
        if why is None:
            raise
        raise DatabaseStartupError(f"cannot use {where(database.url)}: {why}") from None


def _sqlite_directory_missing(url: str) -> bool:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return False
    return not Path(parsed.database).resolve().parent.is_dir()
