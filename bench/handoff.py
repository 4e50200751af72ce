"""What the human handoff costs, on ``parley serve`` (simulated LLM at zero latency):

- an agent's message beside a bot's whole turn, p50 over one client, paired per round;
- fan-out: N subscribers on one conversation's SSE events stream, an agent writing; from
  the write answered to each subscriber's receipt, p50 and p99 (the subscribers run in
  this process, on aiohttp: their own CPU is in the figure, an upper bound);
- a queue of N waiting conversations on PostgreSQL: the queue page (the 50 longest waits)
  and a /metrics scrape (which reads the queue's depth and oldest wait), p50 and p99.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

from bench.stats import median, paired_overheads, percentile
from bench.turns import Server, _ensure_goal, _zero_latency_parley

AGENT = {"x-parley-agent": "bench-agent"}  # development mode: no key


@dataclass(frozen=True)
class HandoffResult:
    agent_message_p50: float  # seconds, median over rounds
    bot_turn_p50: float
    added: float  # agent message over bot turn, paired per round (negative: cheaper)
    subscribers: int
    delivery_p50: float
    delivery_p99: float
    delivered: int  # of subscribers x messages
    expected: int
    queue_size: int
    queue_page_p50: float | None  # None: no PostgreSQL given
    queue_page_p99: float | None
    scrape_p50: float | None
    scrape_p99: float | None


async def _escalated(http: httpx.AsyncClient) -> str:
    made = await http.post("/v1/conversations/", json={"goal_id": "bench"})
    made.raise_for_status()
    conversation: str = made.json()["id"]
    (await http.post(f"/v1/conversations/{conversation}/escalate", json={})).raise_for_status()
    return conversation


async def _p50s(server: Server, turns: int) -> tuple[float, float]:
    """(agent message p50, bot whole turn p50), interleaved."""
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        held = await _escalated(http)
        (await http.post(f"/v1/conversations/{held}/assign", headers=AGENT)).raise_for_status()
        made = await http.post("/v1/conversations/", json={"goal_id": "bench"})
        bot = made.json()["id"]
        agent_times, bot_times = [], []
        for _ in range(turns):
            began = time.perf_counter()
            answer = await http.post(
                f"/v1/conversations/{held}/messages", json={"content": "Hi"}, headers=AGENT
            )
            answer.raise_for_status()
            agent_times.append(time.perf_counter() - began)
            began = time.perf_counter()
            turn = await http.post(f"/v1/conversations/{bot}/messages", json={"content": "Hi"})
            turn.raise_for_status()
            bot_times.append(time.perf_counter() - began)
    return median(agent_times), median(bot_times)


async def _fan_out(server: Server, subscribers: int, messages: int) -> tuple[list[float], int]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        conversation = await _escalated(http)
        base = f"/v1/conversations/{conversation}"
        (await http.post(f"{base}/assign", headers=AGENT)).raise_for_status()
        sent: dict[str, float] = {}
        latencies: list[float] = []
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            ready = asyncio.Semaphore(0)

            async def subscribe() -> None:
                async with session.get(f"{server.url}{base}/events") as response:
                    response.raise_for_status()
                    ready.release()
                    seen = 0
                    async for raw in response.content:
                        line = raw.decode().strip()
                        if not line.startswith("data:"):
                            continue
                        received = time.perf_counter()
                        event = json.loads(line[5:])
                        content = (event.get("message") or {}).get("content")
                        if content in sent:
                            latencies.append(received - sent[content])
                            seen += 1
                            if seen == messages:
                                return

            tasks = [asyncio.create_task(subscribe()) for _ in range(subscribers)]
            for _ in range(subscribers):
                async with asyncio.timeout(120):
                    await ready.acquire()
            for n in range(messages):
                content = f"message {n}"
                sent[content] = time.perf_counter()
                answer = await http.post(
                    f"{base}/messages", json={"content": content}, headers=AGENT
                )
                answer.raise_for_status()
                await asyncio.sleep(0.2)
            _, pending = await asyncio.wait(tasks, timeout=60)
            for task in pending:
                task.cancel()
    return latencies, subscribers * messages


async def _queue(url: str, size: int, samples: int) -> tuple[list[float], list[float]]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for start in range(0, size, 50):
            await asyncio.gather(*(_escalated(http) for _ in range(min(50, size - start))))
        pages, scrapes = [], []
        for _ in range(samples):
            began = time.perf_counter()
            (await http.get("/v1/handoffs/?limit=50")).raise_for_status()
            pages.append(time.perf_counter() - began)
            began = time.perf_counter()
            (await http.get("/metrics")).raise_for_status()
            scrapes.append(time.perf_counter() - began)
    return pages, scrapes


def run(
    *,
    rounds: int = 5,
    turns: int = 100,
    subscribers: int = 1000,
    messages: int = 10,
    queue_size: int = 1000,
    postgres_url: str | None = None,
) -> HandoffResult:
    with tempfile.TemporaryDirectory() as workdir:
        url = f"sqlite+aiosqlite:///{Path(workdir) / uuid.uuid4().hex}.db"
        env = {
            "PARLEY_LIVE_MAX_STREAMS": str(subscribers + 10),
            "PARLEY_METRICS_CACHE_SECONDS": "0",
        }
        server = _zero_latency_parley("parley handoff", url, env)
        try:
            asyncio.run(_ensure_goal(server.url))
            pairs = [asyncio.run(_p50s(server, turns)) for _ in range(rounds)]
            latencies, expected = asyncio.run(_fan_out(server, subscribers, messages))
        finally:
            server.process.terminate()
            server.process.wait(timeout=30)
        pages: list[float] = []
        scrapes: list[float] = []
        if postgres_url is not None:
            queued = _zero_latency_parley("parley queue", postgres_url, env)
            try:
                asyncio.run(_ensure_goal(queued.url))
                pages, scrapes = asyncio.run(_queue(queued.url, queue_size, 100))
            finally:
                queued.process.terminate()
                queued.process.wait(timeout=30)
    agent, bot = [a for a, _ in pairs], [b for _, b in pairs]
    ordered = sorted(latencies)
    return HandoffResult(
        agent_message_p50=median(agent),
        bot_turn_p50=median(bot),
        added=median(paired_overheads(agent, bot)),
        subscribers=subscribers,
        delivery_p50=percentile(ordered, 0.5) if ordered else float("inf"),
        delivery_p99=percentile(ordered, 0.99) if ordered else float("inf"),
        delivered=len(latencies),
        expected=expected,
        queue_size=queue_size,
        queue_page_p50=percentile(sorted(pages), 0.5) if pages else None,
        queue_page_p99=percentile(sorted(pages), 0.99) if pages else None,
        scrape_p50=percentile(sorted(scrapes), 0.5) if scrapes else None,
        scrape_p99=percentile(sorted(scrapes), 0.99) if scrapes else None,
    )


def report(result: HandoffResult) -> list[str]:
    ms = 1000
    lines = [
        "The human handoff (parley serve, simulated LLM at zero latency, SQLite)",
        f"    agent message p50 {result.agent_message_p50 * ms:6.2f} ms   bot whole turn p50"
        f" {result.bot_turn_p50 * ms:6.2f} ms   difference {result.added * ms:+6.2f} ms",
        f"    fan-out to {result.subscribers} SSE subscribers: delivered"
        f" {result.delivered}/{result.expected}, p50 {result.delivery_p50 * ms:7.1f} ms,"
        f" p99 {result.delivery_p99 * ms:7.1f} ms",
    ]
    if result.queue_page_p50 is not None and result.scrape_p50 is not None:
        assert result.queue_page_p99 is not None
        assert result.scrape_p99 is not None
        lines.append(
            f"    {result.queue_size} waiting on PostgreSQL: queue page p50"
            f" {result.queue_page_p50 * ms:.1f} ms, p99 {result.queue_page_p99 * ms:.1f} ms;"
            f" /metrics p50 {result.scrape_p50 * ms:.1f} ms, p99 {result.scrape_p99 * ms:.1f} ms"
        )
    return lines
