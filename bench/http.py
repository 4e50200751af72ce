"""Requests per second of each variant under uvicorn on loopback, load from wrk.

Every variant runs in its own server process from the start; rounds interleave them,
and each round's ratio is taken against the bare app's run in that same round.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass

import httpx

from bench.stats import median, spread
from bench.variants import VARIANTS

PATH = "/things3/42"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start(variant: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.serve", variant, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + PATH, timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{variant} did not start")


def _wrk(url: str, seconds: float, connections: int) -> float:
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", url + PATH],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"wrk printed no rate: {output}")
    return float(match.group(1))


@dataclass
class Result:
    variant: str
    rps: float
    ratio: float
    ratio_spread: tuple[float, float]


def run(rounds: int = 5, seconds: float = 3.0, connections: int = 16) -> list[Result]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (make bench installs Debian's wrk)")
    with ExitStack() as stack:
        urls = {}
        for variant in VARIANTS:
            process, urls[variant] = _start(variant)
            stack.callback(process.wait)
            stack.callback(process.terminate)
        for url in urls.values():  # warm-up
            _wrk(url, min(1.0, seconds), connections)
        rates: dict[str, list[float]] = {v: [] for v in urls}
        for _ in range(rounds):
            for variant, url in urls.items():
                rates[variant].append(_wrk(url, seconds, connections))
    results = []
    for variant, values in rates.items():
        ratios = [v / b for v, b in zip(values, rates["bare"], strict=True)]
        results.append(Result(variant, median(values), median(ratios), spread(ratios)))
    return results


def report(results: list[Result]) -> list[str]:
    lines = [f"HTTP under uvicorn + wrk, GET {PATH}: requests/s, ratio to bare (median [IQR])"]
    for r in results:
        low, high = r.ratio_spread
        lines.append(f"    {r.variant:<19} {r.rps:9.0f}  {r.ratio:5.3f} [{low:5.3f}, {high:5.3f}]")
    return lines


if __name__ == "__main__":
    print("\n".join(report(run())))
