"""The sweeps under two ``parley serve`` processes on one database (SQLite and PostgreSQL):
idle conversations end once each, counted once across both; with retention on, ended
conversations past it are deleted once each, counted once across both."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import create_async_engine

from parley.store.tables import CONVERSATIONS
from tests.support.serve import serve_process
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

CONVERSATIONS_PER_RUN = 24


@contextmanager
def _two_replicas(tmp_path: Path, database_url: str, **env: str) -> Iterator[list[str]]:
    settings = {
        "PARLEY_DATABASE_URL": database_url,
        "PARLEY_IDLE_SWEEP_SECONDS": "0.2",
        **env,
    }
    with ExitStack() as stack:
        urls = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            served = stack.enter_context(serve_process(tmp_path / name, env=settings))
            urls.append(served.url)
        yield urls


def _total(urls: list[str], name: str, **labels: str) -> float:
    """A counter summed over every replica's series that carry ``labels``."""
    total = 0.0
    for url in urls:
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
    return total


def _start(url: str, goal: Mapping[str, object], count: int) -> list[str]:
    assert httpx.post(f"{url}/v1/goals/", json=goal).status_code == 201
    ids = []
    for n in range(count):
        made = httpx.post(f"{url}/v1/conversations/", json={"goal_id": goal["id"]}).json()
        turn = httpx.post(
            f"{url}/v1/conversations/{made['id']}/messages", json={"content": f"hello {n}"}
        )
        assert turn.status_code == 200, turn.text
        ids.append(made["id"])
    return ids


def test_two_replicas_end_each_idle_conversation_once_and_count_it_once(
    tmp_path: Path, database_url: str
) -> None:  # sync: the replicas are processes; ``database_url`` only empties the database
    with _two_replicas(tmp_path, database_url) as urls:
        goal = {"id": "quick", "name": "Quick", "instructions": "Help.", "idle_timeout_seconds": 1}
        ids = _start(urls[0], goal, CONVERSATIONS_PER_RUN)

        def all_ended() -> bool:
            return _total(urls, "conversations_ended_total") >= CONVERSATIONS_PER_RUN

        wait_until(all_ended, "the sweeps to end every idle one", timeout=60)
        ended = [httpx.get(f"{urls[1]}/v1/conversations/{i}").json() for i in ids]
        assert {(c["status"], c["outcome"], c["outcome_source"]) for c in ended} == {
            ("completed", "abandoned", "timeout")
        }
        counted = _total(urls, "conversations_ended_total", outcome="abandoned", source="timeout")
        assert counted == CONVERSATIONS_PER_RUN  # once each, across both replicas
        assert _total(urls, "conversation_ended_turns_count") == CONVERSATIONS_PER_RUN
        results = httpx.get(f"{urls[0]}/v1/goals/quick/outcomes").json()
        assert results["outcomes"]["abandoned"]["count"] == CONVERSATIONS_PER_RUN


def test_two_replicas_delete_each_expired_conversation_once(
    tmp_path: Path, database_url: str
) -> None:
    with _two_replicas(tmp_path, database_url, PARLEY_RETENTION_DAYS="30") as urls:
        goal = {"id": "kept", "name": "Kept", "instructions": "Help."}
        ids = _start(urls[0], goal, CONVERSATIONS_PER_RUN)
        for conversation in ids:
            closed = httpx.post(f"{urls[1]}/v1/conversations/{conversation}/close")
            assert closed.status_code == 200
        expired, recent = ids[:-4], ids[-4:]
        _age(database_url, expired, days=31)

        def all_deleted() -> bool:
            deleted = _total(urls, "conversations_deleted_total", reason="retention")
            return deleted >= len(expired)

        wait_until(all_deleted, "retention to delete them", timeout=60)
        gone = [httpx.get(f"{urls[0]}/v1/conversations/{i}").status_code for i in expired]
        assert set(gone) == {404}
        kept = [httpx.get(f"{urls[0]}/v1/conversations/{i}").status_code for i in recent]
        assert set(kept) == {200}
        assert _total(urls, "conversations_deleted_total", reason="retention") == len(expired)


def _age(database_url: str, ids: list[str], days: int) -> None:
    """Move these conversations' end ``days`` back, as if they ended then."""

    async def run() -> None:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as connection:
                if engine.dialect.name == "sqlite":
                    await connection.execute(text("PRAGMA busy_timeout=10000"))
                await connection.execute(
                    update(CONVERSATIONS)
                    .where(CONVERSATIONS.c.id.in_([uuid.UUID(i) for i in ids]))
                    .values(ended_at=datetime.now(UTC) - timedelta(days=days))
                )
        finally:
            await engine.dispose()

    asyncio.run(run())
