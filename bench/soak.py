"""``python -m bench.soak [--seconds S] [--clients N] [--database-url URL]`` (``make soak``).

Starts ``parley serve`` (simulated LLM with some failures), drives N clients that mix
whole replies, SSE and WebSocket turns, escalations and clients that hang up mid-reply,
then accounts exactly: every acknowledged user message stored once and nothing else, at
most one reply per message and tied to it, ``http_requests_total`` grown by the requests
sent, no WebSocket left open, and the server's RSS over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from bench.http import free_port

KINDS = ("http", "sse", "ws", "sse_hang_up", "ws_hang_up")
TURNS_PER_CONVERSATION = 12


@dataclass
class Tally:
    acknowledged: dict[str, set[str]] = field(default_factory=dict)  # conversation -> contents
    http_requests: int = 0
    turns: Counter[str] = field(default_factory=Counter)

    def ack(self, conversation_id: str, content: str) -> None:
        self.acknowledged.setdefault(conversation_id, set()).add(content)


async def _new_conversation(http: httpx.AsyncClient, tally: Tally) -> str:
    tally.http_requests += 1
    response = await http.post("/v1/conversations/", json={"goal_id": "soak"})
    response.raise_for_status()
    conversation_id: str = response.json()["id"]
    tally.acknowledged[conversation_id] = set()
    return conversation_id


async def _turn(
    http: httpx.AsyncClient,
    ws_url: str,
    kind: str,
    conversation_id: str,
    content: str,
    tally: Tally,
) -> str:
    """One turn; returns its outcome ("ok", "escalated", "error", "refused", "left")."""
    if kind == "http":
        tally.http_requests += 1
        response = await http.post(
            f"/v1/conversations/{conversation_id}/messages", json={"content": content}
        )
        if response.status_code == 409:
            return "refused"
        tally.ack(conversation_id, content)
        if response.status_code != 200:
            return "error"
        return "escalated" if response.json()["reply"] is None else "ok"
    if kind.startswith("sse"):
        tally.http_requests += 1
        async with http.stream(
            "POST",
            f"/v1/conversations/{conversation_id}/messages",
            json={"content": content, "stream": True},
        ) as response:
            if response.status_code == 409:
                return "refused"
            events: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))
                    if events[-1] == "accepted":
                        tally.ack(conversation_id, content)
                    if kind == "sse_hang_up" and events.count("token") == 2:
                        return "left"
            return {"done": "ok", "escalated": "escalated"}.get(events[-1], "error")
    async with connect(f"{ws_url}/v1/conversations/{conversation_id}/ws") as ws:
        await ws.send(json.dumps({"type": "message", "content": content}))
        tokens = 0
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "accepted":
                tally.ack(conversation_id, content)
            elif frame["type"] == "token":
                tokens += 1
                if kind == "ws_hang_up" and tokens == 2:
                    return "left"
            elif frame["type"] in ("done", "escalated"):
                return "ok" if frame["type"] == "done" else "escalated"
            elif frame["type"] == "error":
                return "refused" if frame["code"] == "conversation_escalated" else "error"


async def _client(
    index: int, http: httpx.AsyncClient, ws_url: str, deadline: float, tally: Tally
) -> None:
    conversation_id = await _new_conversation(http, tally)
    sent = 0
    while time.monotonic() < deadline:
        kind = KINDS[(index + sent) % len(KINDS)]
        # Now and then a trigger phrase: the conversation escalates, the client moves on.
        asks_human = sent % 17 == 16
        content = f"client {index} message {sent}" + (" get me a human" if asks_human else "")
        outcome = await _turn(http, ws_url, kind, conversation_id, content, tally)
        tally.turns[f"{kind}:{outcome}"] += 1
        sent += 1
        if outcome in ("escalated", "refused") or sent % TURNS_PER_CONVERSATION == 0:
            conversation_id = await _new_conversation(http, tally)


def _requests_total(exposition: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "http_requests"
        for sample in family.samples
        if sample.name == "http_requests_total" and sample.labels.get("path") != "/metrics"
    )


def _gauge(exposition: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == name
        for sample in family.samples
    )


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _account(http: httpx.AsyncClient, tally: Tally) -> list[str]:
    """What does not add up, as sentences (empty when everything does)."""
    problems = []
    for conversation_id, acknowledged in tally.acknowledged.items():
        response = await http.get(f"/v1/conversations/{conversation_id}")
        messages = response.json()["messages"]
        users = [m for m in messages if m["role"] == "user"]
        stored = Counter(m["content"] for m in users)
        if set(stored) != acknowledged or any(n > 1 for n in stored.values()):
            problems.append(
                f"{conversation_id}: stored {dict(stored)}, acknowledged {acknowledged}"
            )
        replies = [m["reply_to"] for m in messages if m["role"] == "assistant"]
        if len(set(replies)) != len(replies) or not set(replies) <= {u["id"] for u in users}:
            problems.append(f"{conversation_id}: replies not one per user message")
    return problems


async def soak(url: str, pid: int, seconds: float, clients: int) -> int:
    ws_url = url.replace("http", "ws", 1)
    tally = Tally()
    limits = httpx.Limits(max_connections=clients * 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        goal: dict[str, Any] = {
            "id": "soak",
            "name": "Soak",
            "instructions": "Answer briefly.",
            "escalation": {"max_turns": 1000, "trigger_phrases": ["human"]},
        }
        (await http.post("/v1/goals/", json=goal)).raise_for_status()
        before = _requests_total((await http.get("/metrics")).text)
        tally.http_requests = 0
        deadline = time.monotonic() + seconds
        rss: list[int] = []

        async def sample_rss() -> None:
            while time.monotonic() < deadline:
                rss.append(_rss_kib(pid))
                await asyncio.sleep(1)

        await asyncio.gather(
            sample_rss(), *(_client(i, http, ws_url, deadline, tally) for i in range(clients))
        )
        # Hung-up turns finish on the server in their own time; WebSockets close.
        open_sockets = 1.0
        settle = time.monotonic() + 30
        while time.monotonic() < settle:
            exposition = (await http.get("/metrics")).text
            open_sockets = _gauge(exposition, "ws_connections_active")
            if open_sockets == 0:
                break
            await asyncio.sleep(0.2)
        requests_delta = _requests_total(exposition) - before
        problems = await _account(http, tally)
    acknowledged = sum(len(contents) for contents in tally.acknowledged.values())
    print(f"{clients} clients for {seconds:.0f} s: {sum(tally.turns.values())} turns")
    for outcome, count in sorted(tally.turns.items()):
        print(f"  {outcome:24} {count}")
    print(f"user messages acknowledged {acknowledged}, stored as acknowledged: {not problems}")
    print(
        f"http requests sent {tally.http_requests}, http_requests_total delta {requests_delta:.0f}"
    )
    print(f"ws_connections_active at the end {open_sockets:.0f}")
    warm, end = (rss[len(rss) // 4], rss[-1]) if rss else (0, 0)
    print(f"server RSS KiB: after warm-up {warm}, end {end}, peak {max(rss, default=0)}")
    for problem in problems[:20]:
        print("MISMATCH", problem)
    exact = requests_delta == tally.http_requests and open_sockets == 0
    return 0 if exact and not problems else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="parley-soak-") as scratch:
        env = {
            **os.environ,
            "PARLEY_DATABASE_URL": args.database_url
            or f"sqlite+aiosqlite:///{Path(scratch) / 'soak.db'}",
            "PARLEY_LLM_PROVIDER": "simulated",
            "PARLEY_SIM_TTFT_SECONDS": "0.05",
            "PARLEY_SIM_TOKEN_DELAY_SECONDS": "0.005",
            "PARLEY_SIM_FAILURE_RATE": "0.03",
            "PARLEY_LLM_MAX_RETRIES": "0",
            "PARLEY_SIM_REQUESTS_PER_MINUTE": "1000000",
            "PARLEY_SIM_TOKENS_PER_MINUTE": "1000000000",
            "PARLEY_RATE_LIMIT_PER_MINUTE": "0",  # every client shares one address
            "PARLEY_LOG_LEVEL": "WARNING",
            "PARLEY_LOG_FORMAT": "json",
        }
        env.pop("GROQ_API_KEY", None)
        log_path = Path(scratch) / "server.log"
        log = log_path.open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "parley", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    print("parley serve did not become ready", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            code = asyncio.run(soak(url, server.pid, args.seconds, args.clients))
            errors = [
                line for line in log_path.read_text().splitlines() if '"unhandled_error"' in line
            ]
            print(f"unhandled errors in the server log: {len(errors)}")
            return code or int(bool(errors))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            log.close()


if __name__ == "__main__":
    sys.exit(main())
