"""What keys and limits add to a turn: a whole turn's latency, one client at a time, on
the simulated LLM at zero latency and SQLite (or PostgreSQL: ``postgres_url``), for

- ``no key``: development mode (no key exists: nothing to look up);
- ``key, in process``: a made key with a budget, rpm and tpm, counted in this process;
- ``key, in Redis``: the same, counted in Redis (``PARLEY_REDIS_URL``, this machine's).

Each variant is its own ``parley serve``; rounds interleave them, and the added latency
is paired with ``no key`` per round. The server's CPU a turn (from /proc) is shown beside
it: what the key costs Parley, steadier than latency on a busy machine.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.postgres import emptied_beside
from bench.stats import median, paired_overheads, spread
from bench.turns import Server, _ensure_goal, _zero_latency_parley

REDIS_URL = "redis://127.0.0.1:6379/0"
NO_KEY, IN_PROCESS, IN_REDIS = "no key", "key, in process", "key, in Redis"
# Limits no run reaches: every turn pays for its checks, none is refused.
LIMITS = {"budget_usd": 1_000_000, "rpm": 1_000_000, "tpm": 100_000_000}


@dataclass(frozen=True)
class KeysResult:
    variant: str
    p50: list[float]  # per round, seconds
    cpu: list[float]  # per round, the server's CPU seconds a turn


def _made_key(server: Server) -> dict[str, str]:
    made = httpx.post(
        f"{server.url}/v1/keys/", json={"name": "bench", "role": "client", **LIMITS}, timeout=30
    )
    made.raise_for_status()
    return {"Authorization": f"Bearer {made.json()['secret']}"}


async def _p50(server: Server, headers: dict[str, str], turns: int) -> float:
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as http:
        created = await http.post("/v1/conversations/", json={"goal_id": "bench"})
        created.raise_for_status()
        path = f"/v1/conversations/{created.json()['id']}/messages"
        latencies = []
        for _ in range(turns):
            started = asyncio.get_running_loop().time()
            answer = await http.post(path, json={"content": "Hi"})
            answer.raise_for_status()
            latencies.append(asyncio.get_running_loop().time() - started)
    return median(latencies)


def run(*, rounds: int = 7, turns: int = 200, postgres_url: str | None = None) -> list[KeysResult]:
    """``postgres_url``: each variant on a database of its own beside that one (``no key``
    needs one where no key exists), instead of SQLite files."""
    with tempfile.TemporaryDirectory() as workdir:
        servers: dict[str, Server] = {}
        headers: dict[str, dict[str, str]] = {}
        try:
            for number, variant in enumerate((NO_KEY, IN_PROCESS, IN_REDIS)):
                url = (
                    f"sqlite+aiosqlite:///{Path(workdir) / uuid.uuid4().hex}.db"
                    if postgres_url is None
                    else emptied_beside(postgres_url, f"keys{number}")
                )
                env = (
                    {
                        "PARLEY_REDIS_URL": REDIS_URL,
                        "PARLEY_REDIS_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
                    }
                    if variant == IN_REDIS
                    else {}
                )
                servers[variant] = _zero_latency_parley(variant, url, env)
                asyncio.run(_ensure_goal(servers[variant].url))
                headers[variant] = {} if variant == NO_KEY else _made_key(servers[variant])
            p50s: dict[str, list[float]] = {variant: [] for variant in servers}
            cpus: dict[str, list[float]] = {variant: [] for variant in servers}
            for _ in range(rounds):
                for variant, server in servers.items():
                    began = server.cpu_seconds()
                    p50s[variant].append(asyncio.run(_p50(server, headers[variant], turns)))
                    cpus[variant].append((server.cpu_seconds() - began) / turns)
        finally:
            for server in servers.values():
                server.process.terminate()
                server.process.wait(timeout=30)
    return [KeysResult(variant, p50s[variant], cpus[variant]) for variant in p50s]


def added(results: list[KeysResult], variant: str) -> float:
    """The variant's median p50 over ``no key``'s, paired per round (seconds)."""
    by = {r.variant: r.p50 for r in results}
    return median(paired_overheads(by[variant], by[NO_KEY]))


def report(results: list[KeysResult], database: str = "SQLite") -> list[str]:
    lines = [
        f"Keys and limits, a whole turn's p50 and the server's CPU a turn, one client, {database}"
        " (added: paired with no key per round, median [IQR])"
    ]
    p50s = {r.variant: r.p50 for r in results}
    cpus = {r.variant: r.cpu for r in results}
    for r in results:
        overheads = paired_overheads(r.p50, p50s[NO_KEY])
        low, high = spread(overheads)
        cpu_added = median(paired_overheads(r.cpu, cpus[NO_KEY]))
        lines.append(
            f"    {r.variant:<18} {median(r.p50) * 1000:6.2f} ms"
            f"  + {median(overheads) * 1000:5.2f} [{low * 1000:5.2f}, {high * 1000:5.2f}] ms"
            f"   CPU {median(r.cpu) * 1000:5.2f} ms + {cpu_added * 1000:5.2f} ms"
        )
    return lines
