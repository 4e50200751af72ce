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
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, generate_latest
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
    ratio: float  # against generate_latest, single process, same series
    ratio_name: str


_LOOP = asyncio.new_event_loop()


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
    sizes: tuple[int, ...] = (1_000, 10_000, 50_000), repeats: int = 7, workers: int = 4
) -> list[Result]:
    results = []
    for series in sizes:
        registry = _registry(series)
        endpoint = MetricsEndpoint(registry)
        baseline = _time(lambda r=registry: generate_latest(r), repeats)
        plain = _endpoint_call(endpoint, False)
        zipped = _endpoint_call(endpoint, True)
        results.append(
            Result(
                series, "generate_latest", baseline, len(generate_latest(registry)), 1.0, "itself"
            )
        )
        results.append(
            Result(
                series,
                "parley plain",
                _time(lambda e=endpoint: _endpoint_call(e, False), repeats),
                len(plain),
                0,
                "generate_latest",
            )
        )
        results.append(
            Result(
                series,
                "parley gzip",
                _time(lambda e=endpoint: _endpoint_call(e, True), repeats),
                len(zipped),
                0,
                "generate_latest",
            )
        )
        directory = _multiprocess_dir(series, workers)
        try:
            results.append(
                Result(
                    series,
                    f"multiprocess x{workers}",
                    _time(lambda d=directory: generate_latest(multiprocess.registry(d)), repeats),
                    len(generate_latest(multiprocess.registry(directory))),
                    0,
                    "single process",
                )
            )
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        for result in results[-3:]:
            result.ratio = result.milliseconds / baseline
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
