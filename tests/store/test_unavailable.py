"""Which database failures are "unavailable, retry shortly", and of what kind; and how
they are counted and logged (once per kind, not once per request)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import exc as sa
from structlog.testing import capture_logs

from parley.domain.errors import DatabaseUnavailableError
from parley.observability import DatabaseMetrics
from parley.store import Database
from parley.store.database import _SQLiteThread
from parley.store.unavailable import unavailable_kind
from parley.telemetry import DatabaseErrors
from tests.conftest import app_client, make_settings
from tests.support.metrics import FakeClock, value


def _wrapped(error: BaseException, cls: type[sa.DBAPIError] = sa.OperationalError) -> BaseException:
    return cls("INSERT INTO messages ...", {}, error)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (_wrapped(sqlite3.OperationalError("database or disk is full")), "disk_full"),
        (_wrapped(sqlite3.OperationalError("attempt to write a readonly database")), "read_only"),
        (_wrapped(sqlite3.OperationalError("database is locked")), "timeout"),
        (_wrapped(ConnectionRefusedError(111, "Connect call failed")), "refused"),
        (_wrapped(ConnectionResetError(104, "reset by peer"), sa.InterfaceError), "reset"),
        (_wrapped(Exception("connection was closed in the middle of operation")), "reset"),
        (_wrapped(TimeoutError()), "timeout"),
        (sa.TimeoutError("QueuePool limit of size 20 overflow 30 reached"), "timeout"),
        (ConnectionRefusedError(111, "refused"), "refused"),
        (OSError(28, "No space left on device"), "disk_full"),
        (_wrapped(Exception("something odd")), "other"),
    ],
)
def test_unavailability_is_read_by_its_kind(error: BaseException, kind: str) -> None:
    assert unavailable_kind(error) == kind


@pytest.mark.parametrize(
    "error",
    [
        _wrapped(sqlite3.IntegrityError("UNIQUE constraint failed"), sa.IntegrityError),
        _wrapped(Exception("syntax error"), sa.ProgrammingError),
        ValueError("a bug"),
        KeyError("a bug"),
    ],
)
def test_constraints_and_bugs_are_not_unavailability(error: BaseException) -> None:
    assert unavailable_kind(error) is None


def test_each_kind_is_counted_every_time_and_logged_once_per_quiet_period() -> None:
    registry = CollectorRegistry()
    clock = FakeClock()
    errors = DatabaseErrors(DatabaseMetrics.register(registry), quiet_seconds=30, clock=clock)
    failure = _wrapped(ConnectionResetError())
    with capture_logs() as logs:
        for _ in range(50):
            errors.unavailable("reset", failure)
        errors.unavailable("timeout", failure)
        clock.advance(30)
        errors.unavailable("reset", failure)
    assert value(registry, "db_errors_total", kind="reset") == 51
    assert value(registry, "db_errors_total", kind="disk_full") == 0  # there from the start
    assert [(log["kind"], log["times"]) for log in logs] == [
        ("reset", 1),
        ("timeout", 1),
        ("reset", 50),
    ]


def test_a_full_disk_answers_503_and_counts_it_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite out of space answered 500; now the one error shape's 503 and Retry-After."""
    with app_client(make_settings(tmp_path)) as client:
        client.post("/v1/goals/", json={"id": "g", "name": "G", "instructions": "Help."})
        conversation = client.post("/v1/conversations/", json={"goal_id": "g"}).json()["id"]

        def full(*_: object, **__: object) -> None:
            raise _wrapped(sqlite3.OperationalError("database or disk is full"))

        monkeypatch.setattr(_SQLiteThread, "_in_transaction", full)
        for answer in (
            client.post(f"/v1/conversations/{conversation}/messages", json={"content": "hi"}),
            client.post("/v1/conversations/", json={"goal_id": "g"}),
            client.get(f"/v1/conversations/{conversation}"),
        ):
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["error"]["code"] == "database_unavailable"
        registry = client.app.state.instrumentation.registry  # type: ignore[attr-defined]
        assert value(registry, "db_errors_total", kind="disk_full") == 3


async def test_run_transaction_raises_the_domains_error_with_its_cause(tmp_path: Path) -> None:
    seen: list[str] = []
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    database.on_unavailable = lambda kind, _error: seen.append(kind)

    def locked(_connection: object) -> None:
        raise _wrapped(sqlite3.OperationalError("database is locked"))

    try:
        with pytest.raises(DatabaseUnavailableError) as refused:
            await database.run_transaction(locked)
    finally:
        await database.dispose()
    assert refused.value.kind == "timeout"
    assert isinstance(refused.value.__cause__, sa.OperationalError)
    assert seen == ["timeout"]
