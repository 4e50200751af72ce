"""What a scrape costs: time and bytes to render /metrics at 1k, 10k and 50k series.

Parley's endpoint is compared with ``prometheus_client.generate_latest`` on the same
registry (what Parley adds must not make it slower), plain and gzip, and in
multiprocess mode with four worker files against the single-process time.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from starlette.requests import Request

from bench.stats import median
from parley.observability import multiprocess
from parley.observability.exposition import MetricsEndpoint

_WORKER = """
import sys
from prometheus_client import Counter
series = int(sys.argv[1])
counter = Counter("bench_requests_total", "Bench.", ["route", "status"])
for index in range(series):
    counter.labels(f"/route/{index // 10}", str(200 + index % 10)).inc(index)
"""


def _registry(series: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("bench_requests_total", "Bench.", ["route", "status"], registry=registry)
    for index in range(series):
        counter.labels(f"/route/{index // 10}", str(200 + index % 10)).inc(index)
    return registry


def _request(gzip: bool) -> Request:
    headers = [(b"accept-encoding", b"gzip")] if gzip else []
    return Request({"type": "http", "method": "GET", "path": "/metrics", "headers": headers})


def _time(function: object, repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls."""
    samples = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter_ns()
        function()  # type: ignore[operator]
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return median(samples)


@dataclass
class Result:
    series: int
    mode: str
    milliseconds: float
    size_bytes: int
    ratio: float  # against generate_latest, single process, same series (paired median)


_LOOP = asyncio.new_event_loop()


def _merged(directory: str) -> bytes:
    return generate_latest(multiprocess.registry(directory))


def _endpoint_call(endpoint: MetricsEndpoint, gzip: bool) -> bytes:
    response = _LOOP.run_until_complete(endpoint.handle(_request(gzip)))
    return bytes(response.body)


def _multiprocess_dir(series: int, workers: int) -> str:
    directory = tempfile.mkdtemp(prefix="parley-bench-mp-")
    env = {**os.environ, multiprocess.ENV: directory}
    for _ in range(workers):
        subprocess.run([sys.executable, "-c", _WORKER, str(series)], env=env, check=True)
    return directory


def run(
    sizes: tuple[int, ...] = (1_000, 10_000, 50_000), repeats: int = 9, workers: int = 4
) -> list[Result]:
    """Each repeat times the baseline and every variant back to back; ratios are paired."""
    # As in Parley's own registries: no *_created series (multiprocess mode has none either).
    disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
    results = []
    for series in sizes:
        registry = _registry(series)
        endpoint = MetricsEndpoint(registry)
        directory = _multiprocess_dir(series, workers)
        variants: dict[str, Callable[[], bytes]] = {
            "generate_latest": partial(generate_latest, registry),
            "parley plain": partial(_endpoint_call, endpoint, False),
            "parley gzip": partial(_endpoint_call, endpoint, True),
            f"multiprocess x{workers}": partial(_merged, directory),
        }
        try:
            sizes_of = {name: len(function()) for name, function in variants.items()}
            timings: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(repeats):
                for name, function in variants.items():
                    timings[name].append(_time(function, 1))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        baseline = timings["generate_latest"]
        for name, values in timings.items():
            ratios = [v / b for v, b in zip(values, baseline, strict=True)]
            results.append(Result(series, name, median(values), sizes_of[name], median(ratios)))
    return results


def report(results: list[Result]) -> list[str]:
    lines = ["/metrics scrape cost: median ms, bytes, ratio to generate_latest (single process)"]
    for r in results:
        lines.append(
            f"    {r.series:>6} series  {r.mode:<17} {r.milliseconds:8.2f} ms {r.size_bytes:>10,} B"
            f"  x{r.ratio:.2f}"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(report(run())))
