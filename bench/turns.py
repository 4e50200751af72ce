"""A turn's cost against a plain pass-through and an LLM gateway.

Every proxy sits in front of the same Groq-compatible fake (``bench.fake_llm``: set time
to first token, token count and delay) and is driven by the same clients from this
process:

- ``direct``: the clients call the fake itself (what any proxy adds is measured from it);
- ``passthrough``: ``bench.passthrough``, a minimal relay (the floor for a proxy);
- ``litellm``: LiteLLM's proxy, when ``LITELLM`` names its executable (see the docs);
- ``parley sse`` / ``parley ws``: a Parley turn, streamed (the Groq provider, SQLite).

Rounds interleave the variants. Per variant and client count: time to first token
(p50, p95, and added over ``direct``), streams a second, and the server's CPU per stream
(from /proc, the server process only). Whole turns on a zero-latency simulated LLM give
turns a second per worker on SQLite and PostgreSQL, and the cost at turn 1 vs turn 50
of one conversation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from bench.fake_llm import KEEP_ALIVE_SECONDS
from bench.http import free_port
from bench.stats import median, spread

MODEL = "llama-3.1-8b-instant"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello?"}], "stream": True}
TICKS = os.sysconf("SC_CLK_TCK")
LITELLM_KEY = "sk-bench"  # LiteLLM's proxy refuses to start without a master key


@dataclass(frozen=True)
class Upstream:
    ttft: float = 0.05
    tokens: int = 100
    delay: float = 0.005


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


@dataclass
class Sample:
    ttfts: list[float] = field(default_factory=list)
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class Result:
    variant: str
    clients: int
    ttft_p50: list[float]  # per round, seconds
    ttft_p95: list[float]
    streams_per_second: list[float]
    cpu_per_stream: list[float]  # server CPU seconds per stream
    failed: int

    def added_ttft(self, direct: Result) -> float:
        return median(self.ttft_p50) - median(direct.ttft_p50)


def _spawn(name: str, command: list[str], ready: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [part.replace("{port}", str(port)) for part in command],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(url + ready, timeout=2).status_code < 500:
                return Server(name, process, url)
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.1)


@contextmanager
def _servers(upstream: Upstream, database_url: str) -> Iterator[dict[str, Server]]:
    servers: dict[str, Server] = {}
    try:
        servers["direct"] = _spawn(
            "direct",
            [
                sys.executable,
                "-m",
                "bench.fake_llm",
                "{port}",
                str(upstream.ttft),
                str(upstream.tokens),
                str(upstream.delay),
            ],
            "/",
        )
        fake = servers["direct"].url
        servers["passthrough"] = _spawn(
            "passthrough", [sys.executable, "-m", "bench.passthrough", "{port}", fake], "/"
        )
        litellm = os.environ.get("LITELLM")
        if litellm:
            config = Path(tempfile.mkdtemp()) / "litellm.yaml"
            config.write_text(
                "model_list:\n"
                f"  - model_name: {MODEL}\n"
                "    litellm_params:\n"
                f"      model: openai/{MODEL}\n"
                f"      api_base: {fake}/v1\n"
                "      api_key: bench\n"
            )
            servers["litellm"] = _spawn(
                "litellm",
                [
                    *(litellm, "--config", str(config), "--port", "{port}", "--num_workers", "1"),
                    *("--keepalive_timeout", str(KEEP_ALIVE_SECONDS)),
                ],
                "/health/liveliness",
                # Offline: its tokenizer download would retry for half a minute.
                env={"LITELLM_MASTER_KEY": LITELLM_KEY, "HF_HUB_OFFLINE": "1"},
            )
        servers["parley"] = _spawn(
            "parley",
            [str(Path(sys.executable).with_name("parley")), "serve", "--port", "{port}"],
            "/readyz",
            env={
                "GROQ_API_KEY": "gsk_bench",
                "GROQ_BASE_URL": fake,
                "PARLEY_DATABASE_URL": database_url,
                "PARLEY_RATE_LIMIT_PER_MINUTE": "0",
                "PARLEY_LLM_MAX_RETRIES": "0",
                "PARLEY_LOG_LEVEL": "WARNING",
            },
        )
        yield servers
    finally:
        for server in servers.values():
            server.process.terminate()
        for server in servers.values():
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()


async def _conversation(http: httpx.AsyncClient) -> str:
    response = await http.post("/v1/conversations/", json={"goal_id": "bench"})
    response.raise_for_status()
    conversation_id: str = response.json()["id"]
    return conversation_id


async def _ensure_goal(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post(
            "/v1/goals/",
            json={
                "name": "bench",
                "instructions": "Answer.",
                "escalation": {"max_turns": 10_000, "trigger_phrases": ["never said here"]},
            },
        )


Turn = Callable[[], Awaitable[float | None]]  # time to first token, None if it failed


async def _sse_stream(
    http: httpx.AsyncClient, path: str, body: dict[str, object], marker: bytes
) -> float | None:
    started = time.perf_counter()
    ttft = None
    async with http.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            return None
        async for chunk in response.aiter_raw():
            if ttft is None and marker in chunk:
                ttft = time.perf_counter() - started
    return ttft


async def _nothing() -> None:
    """Clean-up for a client that holds nothing open."""


async def _client_turns(
    variant: str, server: Server, http: httpx.AsyncClient
) -> tuple[Turn, Callable[[], Awaitable[None]]]:
    """One client's turn and its clean-up."""
    if variant in ("direct", "passthrough", "litellm"):
        path = "/v1/chat/completions"

        async def chat() -> float | None:
            return await _sse_stream(http, path, CHAT, b'" word"')  # the first content

        return chat, _nothing
    conversation = await _conversation(http)
    messages = f"/v1/conversations/{conversation}/messages"
    if variant == "parley sse":

        async def sse() -> float | None:
            return await _sse_stream(
                http, messages, {"content": "Hello?", "stream": True}, b"event: token"
            )

        return sse, _nothing
    ws = await connect(f"{server.url.replace('http', 'ws')}{messages.removesuffix('/messages')}/ws")

    async def frame() -> float | None:
        started = time.perf_counter()
        ttft = None
        await ws.send(json.dumps({"type": "message", "content": "Hello?"}))
        while True:
            kind = json.loads(await ws.recv())["type"]
            if kind == "token" and ttft is None:
                ttft = time.perf_counter() - started
            elif kind in ("done", "error", "escalated"):
                return ttft if kind == "done" else None

    return frame, ws.close


async def _load(variant: str, server: Server, clients: int, seconds: float) -> tuple[Sample, float]:
    """``clients`` loops of turns for ``seconds``; the server's CPU seconds spent."""
    sample = Sample()
    limits = httpx.Limits(max_connections=clients + 10)
    # The key is LiteLLM's; the others ignore it.
    headers = {"authorization": f"Bearer {LITELLM_KEY}"}
    async with httpx.AsyncClient(
        base_url=server.url, timeout=120, limits=limits, headers=headers
    ) as http:
        turns = [await _client_turns(variant, server, http) for _ in range(clients)]
        # One turn each first: connections open, caches warm, nothing measured but a
        # failure, which is counted rather than allowed to end the run.
        warm = await asyncio.gather(*(turn() for turn, _ in turns), return_exceptions=True)
        sample.failed += sum(1 for ttft in warm if ttft is None or isinstance(ttft, Exception))
        cpu_before = server.cpu_seconds()
        deadline = time.perf_counter() + seconds

        async def client(turn: Turn) -> None:
            while time.perf_counter() < deadline:
                try:
                    ttft = await turn()
                except (httpx.HTTPError, OSError):
                    ttft = None
                if ttft is None:
                    sample.failed += 1
                else:
                    sample.completed += 1
                    sample.ttfts.append(ttft)

        await asyncio.gather(*(client(turn) for turn, _ in turns))
        cpu = server.cpu_seconds() - cpu_before
        for _, close in turns:
            await close()
    return sample, cpu


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def run_streams(
    *,
    client_counts: tuple[int, ...] = (1, 10, 100, 500),
    rounds: int = 3,
    seconds: float = 10.0,
    upstream: Upstream = Upstream(),
) -> list[Result]:
    directory = tempfile.mkdtemp(prefix="parley-bench-")
    try:
        with _servers(upstream, f"sqlite+aiosqlite:///{directory}/bench.db") as servers:
            asyncio.run(_ensure_goal(servers["parley"].url))
            variants = [name for name in servers if name != "parley"] + ["parley sse", "parley ws"]
            collected: dict[tuple[str, int], list[tuple[Sample, float]]] = {}
            for clients in client_counts:
                for _ in range(rounds):
                    for variant in variants:
                        server = servers[variant.split()[0]]
                        measured = asyncio.run(_load(variant, server, clients, seconds))
                        collected.setdefault((variant, clients), []).append(measured)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    results = []
    for (variant, clients), runs in collected.items():
        results.append(
            Result(
                variant,
                clients,
                [_percentile(s.ttfts, 0.5) for s, _ in runs],
                [_percentile(s.ttfts, 0.95) for s, _ in runs],
                [s.completed / seconds for s, _ in runs],
                [cpu / s.completed if s.completed else float("nan") for s, cpu in runs],
                sum(s.failed for s, _ in runs),
            )
        )
    return results


def report_streams(results: list[Result], upstream: Upstream = Upstream()) -> list[str]:
    lines = [
        f"Streamed turns: upstream TTFT {upstream.ttft * 1000:.0f} ms, {upstream.tokens} "
        f"tokens at {upstream.delay * 1000:.0f} ms; medians over rounds (spread)",
        f"    {'variant':<12} {'clients':>7} {'TTFT p50':>10} {'added':>9} {'TTFT p95':>10} "
        f"{'streams/s':>10} {'CPU/stream':>16} {'failed':>6}",
    ]
    direct = {r.clients: r for r in results if r.variant == "direct"}
    for result in sorted(results, key=lambda r: (r.clients, r.variant)):
        cpu_low, cpu_high = spread(result.cpu_per_stream)
        lines.append(
            f"    {result.variant:<12} {result.clients:>7} "
            f"{median(result.ttft_p50) * 1000:>8.1f}ms "
            f"{result.added_ttft(direct[result.clients]) * 1000:>7.1f}ms "
            f"{median(result.ttft_p95) * 1000:>8.1f}ms "
            f"{median(result.streams_per_second):>10.1f} "
            f"{median(result.cpu_per_stream) * 1000:>6.1f}ms "
            f"({cpu_low * 1000:.0f}-{cpu_high * 1000:.0f}) "
            f"{result.failed:>6}"
        )
    return lines


@dataclass(frozen=True)
class WholeResult:
    database: str
    turns_per_second: float
    cpu_per_turn: float  # server CPU seconds per turn
    early_cpu: float  # per turn, turns 1-5 of one conversation
    late_cpu: float  # per turn, turns 46-50


async def _whole_turns(server: Server, clients: int, seconds: float) -> tuple[int, float]:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        conversations = [await _conversation(http) for _ in range(clients)]
        done = 0
        deadline = time.perf_counter() + seconds
        before = server.cpu_seconds()

        async def client(conversation: str) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                answer = await http.post(
                    f"/v1/conversations/{conversation}/messages", json={"content": "Hi"}
                )
                done += answer.status_code == 200

        await asyncio.gather(*(client(c) for c in conversations))
        return done, server.cpu_seconds() - before


async def _growth(server: Server, conversations: int) -> tuple[float, float]:
    """Server CPU per turn at turns 1-5 and 46-50 of a conversation (its history grows to
    the cap of 40 messages), over several conversations taken turn by turn."""
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        ids = [await _conversation(http) for _ in range(conversations)]
        spent = []
        for _ in range(50):
            before = server.cpu_seconds()
            for conversation in ids:
                await http.post(
                    f"/v1/conversations/{conversation}/messages", json={"content": "Hi"}
                )
            spent.append((server.cpu_seconds() - before) / conversations)
        return sum(spent[:5]) / 5, sum(spent[45:]) / 5


def _zero_latency_parley(name: str, database_url: str, env: dict[str, str] | None = None) -> Server:
    """``parley serve`` on the simulated LLM at zero latency, with no quota and no rate
    limit: what a whole turn costs Parley itself (``env``: settings on top)."""
    return _spawn(
        f"parley {name}",
        [str(Path(sys.executable).with_name("parley")), "serve", "--port", "{port}"],
        "/readyz",
        env={
            "PARLEY_DATABASE_URL": database_url,
            "PARLEY_LLM_PROVIDER": "simulated",
            "PARLEY_SIM_TTFT_SECONDS": "0",
            "PARLEY_SIM_TOKEN_DELAY_SECONDS": "0",
            "PARLEY_SIM_REQUESTS_PER_MINUTE": "10000000",
            "PARLEY_SIM_TOKENS_PER_MINUTE": "1000000000",
            "PARLEY_RATE_LIMIT_PER_MINUTE": "0",
            "PARLEY_LOG_LEVEL": "WARNING",
            **(env or {}),
        },
    )


def run_whole(
    database_urls: dict[str, str],
    *,
    seconds: float = 10.0,
    clients: int = 10,
    conversations: int = 10,
) -> list[WholeResult]:
    """Whole turns on each database, after the bare app's answers to the same requests
    (``bare``, its CPU per request the floor a turn's is read against)."""
    bare = _spawn("bare", [sys.executable, "-m", "bench.bare_app", "{port}"], "/readyz")
    try:
        done, cpu = asyncio.run(_whole_turns(bare, clients, seconds))
    finally:
        bare.process.terminate()
        bare.process.wait(timeout=30)
    nan = float("nan")
    results = [WholeResult("bare", done / seconds, cpu / done if done else nan, nan, nan)]
    for name, url in database_urls.items():
        server = _zero_latency_parley(name, url)
        try:
            asyncio.run(_ensure_goal(server.url))
            done, cpu = asyncio.run(_whole_turns(server, clients, seconds))
            early, late = asyncio.run(_growth(server, conversations))
        finally:
            server.process.terminate()
            server.process.wait(timeout=30)
        results.append(
            WholeResult(name, done / seconds, cpu / done if done else float("nan"), early, late)
        )
    return results


def report_whole(results: list[WholeResult]) -> list[str]:
    lines = [
        "Whole turns, simulated LLM at zero latency, one worker"
        " (bare: FastAPI answering the same requests with nothing behind them)"
    ]
    for r in results:
        growth = (
            f"turn 1-5: {r.early_cpu * 1000:.1f} ms, turn 46-50: {r.late_cpu * 1000:.1f} ms"
            if r.database != "bare"
            else ""
        )
        lines.append(
            f"    {r.database:<10} {r.turns_per_second:>7.1f} turns/s  "
            f"{r.cpu_per_turn * 1000:>5.2f} ms CPU/turn  {growth}".rstrip()
        )
    return lines


@dataclass(frozen=True)
class FloodResult:
    database: str
    idle_p50: float  # seconds, a whole turn with nothing else going on
    flooded_p50: float  # the same, while clients scrape /metrics as fast as they can
    scrapes_per_second: float


async def _turn_latencies(
    http: httpx.AsyncClient, conversation: str, seconds: float
) -> list[float]:
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        await http.post(f"/v1/conversations/{conversation}/messages", json={"content": "Hi"})
        latencies.append(time.perf_counter() - started)
    return latencies


async def _flood(server: Server, seconds: float, scrapers: int, rate: float) -> FloodResult:
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        conversation = await _conversation(http)
        idle = await _turn_latencies(http, conversation, seconds)
        scrapes = 0
        stop = asyncio.Event()

        async def scrape() -> None:
            nonlocal scrapes
            interval = scrapers / rate
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as own:
                next_at = time.perf_counter()
                while not stop.is_set():
                    await own.get("/metrics")
                    scrapes += 1
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

        flooding = [asyncio.ensure_future(scrape()) for _ in range(scrapers)]
        try:
            flooded = await _turn_latencies(http, conversation, seconds)
        finally:
            stop.set()
            await asyncio.gather(*flooding)
    return FloodResult("", median(idle), median(flooded), scrapes / seconds)


def run_scrape_flood(
    database_urls: dict[str, str], *, seconds: float = 5.0, scrapers: int = 4, rate: float = 100
) -> list[FloodResult]:
    """Whole turns one at a time, idle and while ``scrapers`` clients scrape /metrics
    ``rate`` times a second between them (issue 21: 86 scrapes/s raised turn p50 from
    6.8 to 113 ms). A flood faster than the server can send is a flood of any route: the
    proxy's connection and rate limits are for that."""
    results = []
    for name, url in database_urls.items():
        server = _zero_latency_parley(name, url)
        try:
            asyncio.run(_ensure_goal(server.url))
            result = asyncio.run(_flood(server, seconds, scrapers, rate))
        finally:
            server.process.terminate()
            server.process.wait(timeout=30)
        results.append(dataclasses.replace(result, database=name))
    return results


def report_scrape_flood(results: list[FloodResult]) -> list[str]:
    lines = ["Whole turn p50, idle and under a /metrics flood (4 scrapers, 100 scrapes/s)"]
    for r in results:
        lines.append(
            f"    {r.database:<10} idle {r.idle_p50 * 1000:6.1f} ms  flooded "
            f"{r.flooded_p50 * 1000:6.1f} ms  (x{r.flooded_p50 / r.idle_p50:.2f}, "
            f"{r.scrapes_per_second:.0f} scrapes/s)"
        )
    return lines
