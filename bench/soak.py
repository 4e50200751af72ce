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
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.http import free_port
from parley.client import (
    Accepted,
    Done,
    Escalated,
    ParleyClient,
    ParleyError,
    StreamEvent,
    Token,
    TurnFailed,
)
from parley.llm import Role

KINDS = ("http", "sse", "ws", "sse_hang_up", "ws_hang_up")
TURNS_PER_CONVERSATION = 12


@dataclass
class Tally:
    acknowledged: dict[str, set[str]] = field(default_factory=dict)  # conversation -> contents
    http_requests: int = 0
    turns: Counter[str] = field(default_factory=Counter)

    def ack(self, conversation_id: str, content: str) -> None:
        self.acknowledged.setdefault(conversation_id, set()).add(content)


async def _new_conversation(parley: ParleyClient, tally: Tally) -> str:
    tally.http_requests += 1
    conversation_id = str((await parley.create_conversation("soak")).id)
    tally.acknowledged[conversation_id] = set()
    return conversation_id


async def _turn(
    parley: ParleyClient, kind: str, conversation_id: str, content: str, tally: Tally
) -> str:
    """One turn; returns its outcome ("ok", "escalated", "error", "refused", "left")."""
    hang_up = kind.endswith("_hang_up")
    try:
        if kind == "http":
            tally.http_requests += 1
            try:
                turn = await parley.send_message(conversation_id, content)
            except ParleyError as error:
                if error.status != 409:
                    tally.ack(conversation_id, content)  # stored before the LLM failed
                raise
            tally.ack(conversation_id, content)
            return "escalated" if turn.reply is None else "ok"
        if kind.startswith("sse"):
            tally.http_requests += 1
            events = parley.stream_message(conversation_id, content)
            return await _streamed(events, hang_up, lambda: tally.ack(conversation_id, content))
        async with parley.chat(conversation_id) as chat:
            events = chat.send(content)
            return await _streamed(events, hang_up, lambda: tally.ack(conversation_id, content))
    except ParleyError as error:
        return "refused" if error.status == 409 else "error"


async def _streamed(
    events: AsyncGenerator[StreamEvent, None], hang_up: bool, accepted: Callable[[], None]
) -> str:
    """A streamed turn's outcome; with ``hang_up`` the client leaves after two tokens."""
    outcome, tokens = "error", 0
    async with aclosing(events):
        async for event in events:
            match event:
                case Accepted():
                    accepted()
                case Token():
                    tokens += 1
                    if hang_up and tokens == 2:
                        return "left"
                case Done():
                    return "ok"
                case Escalated():
                    return "escalated"
                case TurnFailed(error) if error.code in ENDED:  # the WebSocket's refusal
                    return "refused"
    return outcome


# A WebSocket refuses a message to an ended conversation with an error frame.
ENDED = ("conversation_escalated", "conversation_closed")


async def _client(index: int, parley: ParleyClient, deadline: float, tally: Tally) -> None:
    conversation_id = await _new_conversation(parley, tally)
    sent = 0
    while time.monotonic() < deadline:
        kind = KINDS[(index + sent) % len(KINDS)]
        # Now and then a trigger phrase: the conversation escalates, the client moves on.
        asks_human = sent % 17 == 16
        content = f"client {index} message {sent}" + (" get me a human" if asks_human else "")
        outcome = await _turn(parley, kind, conversation_id, content, tally)
        tally.turns[f"{kind}:{outcome}"] += 1
        sent += 1
        if outcome in ("escalated", "refused") or sent % TURNS_PER_CONVERSATION == 0:
            conversation_id = await _new_conversation(parley, tally)


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


async def _account(parley: ParleyClient, tally: Tally) -> list[str]:
    """What does not add up, as sentences (empty when everything does)."""
    problems = []
    for conversation_id, acknowledged in tally.acknowledged.items():
        messages = (await parley.get_conversation(conversation_id)).messages
        users = [m for m in messages if m.role is Role.USER]
        stored = Counter(m.content for m in users)
        if set(stored) != acknowledged or any(n > 1 for n in stored.values()):
            problems.append(
                f"{conversation_id}: stored {dict(stored)}, acknowledged {acknowledged}"
            )
        replies = [m.reply_to for m in messages if m.role is Role.ASSISTANT]
        if len(set(replies)) != len(replies) or not set(replies) <= {u.id for u in users}:
            problems.append(f"{conversation_id}: replies not one per user message")
    return problems


async def soak(url: str, pid: int, seconds: float, clients: int) -> int:
    tally = Tally()
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=clients * 2))
    async with (
        ParleyClient(url, timeout=60, transport=transport) as parley,
        httpx.AsyncClient(base_url=url, timeout=60) as http,  # /metrics: not the API
    ):
        escalation = {"max_turns": 1000, "trigger_phrases": ["human"]}
        await parley.create_goal("Soak", "Answer briefly.", goal_id="soak", escalation=escalation)
        before = _requests_total((await http.get("/metrics")).text)
        tally.http_requests = 0
        deadline = time.monotonic() + seconds
        rss: list[int] = []

        async def sample_rss() -> None:
            while time.monotonic() < deadline:
                rss.append(_rss_kib(pid))
                await asyncio.sleep(1)

        await asyncio.gather(
            sample_rss(), *(_client(i, parley, deadline, tally) for i in range(clients))
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
        problems = await _account(parley, tally)
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
