"""``python -m bench [--quick]``: every benchmark, then the targets met or missed."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
from importlib.metadata import version

from bench import (
    handoff,
    http,
    inprocess,
    keys,
    memory,
    micro,
    postgres,
    scrape,
    tracing,
    turns,
)
from bench.variants import PEERS


def _versions() -> str:
    packages = (
        "fastapi",
        "starlette",
        "uvicorn",
        "prometheus-client",
        "prometheus-fastapi-instrumentator",
        "starlette-exporter",
    )
    return ", ".join(f"{p} {version(p)}" for p in packages)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke run, not a measurement"
    )
    quick = parser.parse_args().quick

    print(f"Python {platform.python_version()} on {platform.machine()}, {_versions()}\n")
    targets: list[tuple[str, bool, str]] = []

    in_results = asyncio.run(inprocess.run(rounds=2, requests=20) if quick else inprocess.run())
    print("\n".join(inprocess.report(in_results)), end="\n\n")
    overhead = {(r.kind, r.variant): r.overhead_us for r in in_results}
    matched = overhead[("matched", "parley")]
    best_peer = min(overhead[("matched", peer)] for peer in PEERS)
    targets.append(
        ("in-process overhead, matched route <= 8 µs", matched <= 8, f"{matched:.1f} µs")
    )
    targets.append(
        (
            "in-process overhead <= 1/5 of the best peer's",
            matched <= best_peer / 5,
            f"{matched:.1f} µs vs {best_peer:.1f} µs ({matched / best_peer:.2f})",
        )
    )
    for kind in ("unmatched", "raises"):
        value = overhead[(kind, "parley")]
        # "No dearer": within the round-to-round noise of the matched median (1 µs).
        targets.append(
            (
                f"{kind} no dearer than matched",
                value <= matched + 1.0,
                f"{value:.1f} µs vs {matched:.1f} µs",
            )
        )

    http_results = http.run(rounds=1, seconds=1, connections=4) if quick else http.run()
    print("\n".join(http.report(http_results)), end="\n\n")
    ratio = next(r.ratio for r in http_results if r.variant == "parley")
    targets.append(("wrk: >= 0.93 of bare requests/s", ratio >= 0.93, f"{ratio:.3f}"))

    micro_results = asyncio.run(micro.run(quick=quick))
    print("\n".join(micro.report(micro_results)), end="\n\n")
    per_chunk = micro_results[0].overhead_us
    targets.append(("LLM stream wrapper < 1 µs per chunk", per_chunk < 1.0, f"{per_chunk:.3f} µs"))

    scrape_results = scrape.run(sizes=(200,), repeats=2) if quick else scrape.run()
    print("\n".join(scrape.report(scrape_results)), end="\n\n")
    size = 200 if quick else 10_000
    plain = next(r for r in scrape_results if r.series == size and r.mode == "parley plain")
    multi = next(
        r for r in scrape_results if r.series == size and r.mode.startswith("multiprocess")
    )
    # "No slower" within 3%: the spread of repeated renders of the same registry.
    targets.append(
        (
            f"scrape {size} series no slower than generate_latest",
            plain.ratio <= 1.03,
            f"x{plain.ratio:.2f}",
        )
    )
    targets.append(
        (
            f"scrape {size} series, 4 workers < 3x single process",
            multi.ratio < 3,
            f"x{multi.ratio:.2f}",
        )
    )

    mem = asyncio.run(memory.run(requests=2_000, warmup=500) if quick else memory.run())
    print("\n".join(memory.report(mem)), end="\n\n")
    targets.append(
        (
            "RSS within 5% after 100k unmatched requests",
            abs(mem.growth) <= 0.05,
            f"{mem.growth:+.2%}",
        )
    )

    targets += _turn_targets(quick)
    targets += _key_targets(quick)
    targets += _handoff_targets(quick)
    targets += _tracing_targets(quick)

    print("Targets" + (" (quick run: sizes too small to mean anything)" if quick else ""))
    for name, met, shown in targets:
        print(f"    {'met   ' if met else 'MISSED'}  {name}: {shown}")
    return 0


def _tracing_targets(quick: bool) -> list[tuple[str, bool, str]]:
    """What traces cost a turn (bench/tracing.py; issue 25's goal)."""
    middlewares = tracing.compare_middlewares(
        rounds=2 if quick else 15, requests=200 if quick else 2000
    )
    print("\n".join(tracing.report_middlewares(middlewares)), end="\n\n")
    results = tracing.run(rounds=1 if quick else 5, seconds=0.5 if quick else 5.0)
    print("\n".join(tracing.report(results)), end="\n\n")
    tenth = tracing.added_share(results, tracing.TENTH)
    return [("tracing at 10 % sampling adds < 5 % of a turn's CPU", tenth < 0.05, f"{tenth:+.1%}")]


def _handoff_targets(quick: bool) -> list[tuple[str, bool, str]]:
    """What the human handoff costs (bench/handoff.py; issue 23's goals)."""
    result = handoff.run(
        rounds=2 if quick else 5,
        turns=20 if quick else 100,
        subscribers=50 if quick else 1000,
        messages=3 if quick else 10,
        queue_size=100 if quick else 1000,
        postgres_url=_postgres_url(),
    )
    print("\n".join(handoff.report(result)), end="\n\n")
    n = result.subscribers
    targets = [
        (
            "an agent's message costs no more than a bot's whole turn, p50",
            result.added <= 0,
            f"{result.added * 1000:+.2f} ms",
        ),
        (
            f"fan-out to {n} SSE subscribers: every event, p99 <= 1 s",
            result.delivered == result.expected and result.delivery_p99 <= 1.0,
            f"{result.delivered}/{result.expected}, p99 {result.delivery_p99 * 1000:.0f} ms",
        ),
    ]
    if result.queue_page_p99 is not None and result.scrape_p99 is not None:
        worst = max(result.queue_page_p99, result.scrape_p99)
        targets.append(
            (
                f"{result.queue_size} waiting on PostgreSQL: queue page and /metrics p99 <= 50 ms",
                worst <= 0.05,
                f"{worst * 1000:.1f} ms",
            )
        )
    return targets


def _key_targets(quick: bool) -> list[tuple[str, bool, str]]:
    """What keys and their limits add to a turn (bench/keys.py; issue 22's goal)."""
    rounds, turns = (2, 20) if quick else (9, 300)
    databases: list[tuple[str, str | None]] = [("SQLite", None)]
    if (url := _postgres_url()) is not None:
        databases.append(("PostgreSQL", url))
    targets = []
    for database, postgres_url in databases:
        results = keys.run(rounds=rounds, turns=turns, postgres_url=postgres_url)
        print("\n".join(keys.report(results, database)), end="\n\n")
        local, redis = keys.added(results, keys.IN_PROCESS), keys.added(results, keys.IN_REDIS)
        targets += [
            (  # "~0": about a tenth of a turn on this machine
                f"a key's checks add <= 0.25 ms p50, in process, {database}",
                local <= 0.00025,
                f"{local * 1000:.2f} ms",
            ),
            (
                f"a key's checks add <= 1 ms p50, in Redis, {database}",
                redis <= 0.001,
                f"{redis * 1000:.2f} ms",
            ),
        ]
    return targets


def _postgres_url() -> str | None:
    """PARLEY_BENCH_POSTGRES_URL's database, emptied of Parley's tables; None: unset."""
    url = os.environ.get("PARLEY_BENCH_POSTGRES_URL")
    return postgres.emptied(url) if url else None


# Issue 20: a whole turn in 2.5 ms of server CPU, on a machine where the bare app (FastAPI
# on the same stack, nothing behind it) took 0.12 ms a request.
TURN_CPU_BARE_RATIO = 2.5 / 0.12


def _turn_targets(quick: bool) -> list[tuple[str, bool, str]]:
    """The turn benchmark (bench/turns.py) and issue 11's goals."""
    upstream = turns.Upstream()
    streams = turns.run_streams(
        client_counts=(1, 2) if quick else (1, 10, 100, 500),
        rounds=1 if quick else 3,
        seconds=0.5 if quick else 10.0,
        upstream=upstream,
    )
    print("\n".join(turns.report_streams(streams, upstream)), end="\n\n")
    database_urls = {"sqlite": f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/whole.db"}
    if (postgres_url := _postgres_url()) is not None:
        database_urls["postgresql"] = postgres_url
    whole = turns.run_whole(
        database_urls, seconds=1.0 if quick else 10.0, conversations=1 if quick else 10
    )
    print("\n".join(turns.report_whole(whole)), end="\n\n")
    flood = turns.run_scrape_flood(database_urls, seconds=1.0 if quick else 5.0)
    print("\n".join(turns.report_scrape_flood(flood)), end="\n\n")

    by = {(r.variant, r.clients): r for r in streams}
    few, many = (1, 2) if quick else (1, 10)
    targets = []
    for clients in (few, many):
        sse, passthrough = by[("parley sse", clients)], by[("passthrough", clients)]
        cpu = statistics.median(sse.cpu_per_stream) / statistics.median(passthrough.cpu_per_stream)
        targets.append(
            (
                f"streamed turn CPU <= 1.5x the pass-through's ({clients} clients)",
                cpu <= 1.5,
                f"x{cpu:.2f}",
            )
        )
    added = by[("parley sse", few)].added_ttft(by[("direct", few)])
    targets.append(("added TTFT p50 <= 15 ms, 1 client", added <= 0.015, f"{added * 1000:.1f} ms"))
    ours = by[("parley sse", many)].added_ttft(by[("direct", many)])
    floor = max(by[("passthrough", many)].added_ttft(by[("direct", many)]), 0.001)
    targets.append(
        (
            f"added TTFT p50 <= 3x the pass-through's, {many} clients",
            ours <= 3 * floor,
            f"x{ours / floor:.1f}",
        )
    )
    # Throughput where the proxies are saturated (issue 11 measured it at 100 clients):
    # at 10 a 0.6 s stream caps everyone near 17/s, so no proxy could be 3x another.
    loaded = 2 if quick else 100
    if ("litellm", loaded) in by:
        rate = statistics.median(by[("parley sse", loaded)].streams_per_second)
        peer = statistics.median(by[("litellm", loaded)].streams_per_second)
        targets.append(
            (
                f"streams/s >= 3x LiteLLM's ({loaded} clients)",
                rate >= 3 * peer,
                f"x{rate / peer:.1f}",
            )
        )
    for flooded in flood:
        ratio = flooded.flooded_p50 / flooded.idle_p50
        targets.append(
            (
                f"turn p50 under a /metrics flood <= 2x idle, {flooded.database}",
                ratio <= 2.0,
                f"x{ratio:.2f} ({flooded.scrapes_per_second:.0f} scrapes/s)",
            )
        )
    bare = next(result for result in whole if result.database == "bare")
    for result in whole:
        if result is bare:
            continue
        targets.append(
            (
                f"whole turns >= 200/s per worker, {result.database}",
                result.turns_per_second >= 200,
                f"{result.turns_per_second:.0f}/s",
            )
        )
        # Issue 20's 2.5 ms, read against the bare app as the issue measured it beside
        # (0.12 ms): this machine's speed drifts by half within a day, the ratio does not.
        ratio = result.cpu_per_turn / bare.cpu_per_turn
        targets.append(
            (
                f"whole turn CPU <= 2.5 ms at issue 20's speed"
                f" (<= {TURN_CPU_BARE_RATIO:.1f}x the bare app's), {result.database}",
                ratio <= TURN_CPU_BARE_RATIO,
                f"x{ratio:.1f}: {result.cpu_per_turn * 1000:.2f} ms"
                f" (bare app: {bare.cpu_per_turn * 1000:.2f} ms a request)",
            )
        )
    return targets


if __name__ == "__main__":
    sys.exit(main())
