"""Parley as it runs beyond one machine, on one machine: N replicas of ``parley serve`` on
one PostgreSQL behind HAProxy, each scraped by Prometheus (the mixin's rules loaded,
``cluster``/``env`` external labels), which remote-writes everything to VictoriaMetrics.

The integration test (tests/integration/test_replicas.py) and ``make replicas``
(``python -m tests.support.replicas``: up until Ctrl-C) start it the same way; every
process is started and stopped here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import yaml
from bench.postgres import ensure_database
from sqlalchemy import make_url

from tests.support.ports import free_port
from tests.support.processes import stop
from tests.support.tools import require_tool

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules"
EXTERNAL_LABELS = {"cluster": "local", "env": "test"}


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Replicas:
    workdir: Path
    replica_urls: list[str] = field(default_factory=list)
    balancer_url: str = ""
    prometheus_url: str = ""
    victoria_url: str = ""
    processes: dict[str, Process] = field(default_factory=dict)
    parley_env: dict[str, str] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        log = self.workdir / f"{name}.log"
        handle = log.open("wb")
        self._logs.append(handle)
        popen = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
            # A terminal's Ctrl-C reaches only `make replicas`, which stops each in turn.
            start_new_session=True,
        )
        self.processes[name] = Process(name, popen, log)

    def wait_until_up(self, name: str, url: str, seconds: float = 90) -> None:
        process = self.processes[name]
        deadline = time.monotonic() + seconds
        while True:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{name} exited: {process.log.read_text()[-2000:]}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not come up at {url}")
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        """SIGKILL: a replica that vanishes without a goodbye."""
        self.processes[name].popen.send_signal(signal.SIGKILL)
        self.processes[name].popen.wait()

    def stop_all(self, say: Callable[[str], None] | None = None) -> None:
        # Newest first, one at a time: Prometheus flushes its remote-write queue to a
        # VictoriaMetrics that is still up, HAProxy goes before the replicas.
        for process in reversed(list(self.processes.values())):
            began = time.monotonic()
            stop(process.popen, timeout=10)
            if say is not None:
                say(f"stopped {process.name} ({time.monotonic() - began:.1f} s)")
        for handle in self._logs:
            handle.close()


# For the tests: a simulated LLM 25x faster than its default, no rate limits (load from
# one address), goals read every turn. `make replicas` runs with Parley's defaults.
FAST = {
    "PARLEY_SIM_TTFT_SECONDS": "0.01",
    "PARLEY_SIM_TOKEN_DELAY_SECONDS": "0.001",
    "PARLEY_RATE_LIMIT_PER_MINUTE": "0",
    "PARLEY_GOAL_CACHE_SECONDS": "0",
}


# This machine kind's Redis: the replicas' rate limits are counted there, once for all.
REDIS_URL = "redis://127.0.0.1:6379/0"


def _parley_env(database_url: str, *, fast: bool, redis_prefix: str) -> dict[str, str]:
    return {
        "PARLEY_DATABASE_URL": database_url,
        "PARLEY_REDIS_URL": REDIS_URL,
        "PARLEY_REDIS_KEY_PREFIX": redis_prefix,
        "PARLEY_AUTO_MIGRATE": "false",  # migrated once, before the replicas start
        "PARLEY_LLM_PROVIDER": "simulated",
        "PARLEY_LOG_LEVEL": "WARNING",
        "PARLEY_SHUTDOWN_GRACE_SECONDS": "2",  # stops in seconds
        "PARLEY_TRUSTED_PROXIES": "127.0.0.1",  # HAProxy, which sets X-Forwarded-For
        **(FAST if fast else {}),
    }


def _haproxy_config(port: int, replicas: list[int]) -> str:
    servers = "\n".join(
        f"    server r{index} 127.0.0.1:{replica} check inter 500ms fall 2 rise 2"
        for index, replica in enumerate(replicas, start=1)
    )
    return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    # A replica that refuses a connection: the request goes to another one.
    retries 3
    option redispatch

frontend parley
    bind 127.0.0.1:{port}
    # The client's address for the replicas' rate limits, which trust this proxy.
    option forwardfor
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
{servers}
"""


def _prometheus_config(replicas: list[str], victoria: str, interval: str) -> str:
    config = {
        "global": {
            "scrape_interval": interval,
            "evaluation_interval": interval,
            "external_labels": EXTERNAL_LABELS,
        },
        "rule_files": [str(RULES / "*.yml")],
        "scrape_configs": [
            {"job_name": "parley", "static_configs": [{"targets": replicas}]},
        ],
        "remote_write": [
            {
                "url": f"{victoria}/api/v1/write",
                "queue_config": {"batch_send_deadline": "1s", "max_samples_per_send": 2000},
            }
        ],
    }
    text: str = yaml.safe_dump(config)
    return text


@contextlib.contextmanager
def replicas(
    workdir: Path,
    database_url: str,
    *,
    count: int = 3,
    interval: str = "1s",
    fast: bool = True,
    say: Callable[[str], None] | None = None,
) -> Iterator[Replicas]:
    parley = str(Path(sys.executable).with_name("parley"))
    haproxy = require_tool("haproxy")
    prometheus = require_tool("prometheus")
    victoria = require_tool("victoria-metrics")
    stack = Replicas(workdir)
    try:
        subprocess.run(
            [parley, "migrate"],
            env={**os.environ, "PARLEY_DATABASE_URL": database_url},
            check=True,
            capture_output=True,
        )
        # Each run's counts apart from any other's in the shared Redis.
        stack.parley_env = _parley_env(
            database_url, fast=fast, redis_prefix=f"parley-replicas-{uuid.uuid4().hex[:8]}"
        )
        ports = [free_port() for _ in range(count)]
        for index, port in enumerate(ports, start=1):
            stack.start(
                f"parley-{index}",
                [parley, "serve", "--port", str(port)],
                stack.parley_env,
            )
        stack.replica_urls = [f"http://127.0.0.1:{port}" for port in ports]
        for index, url in enumerate(stack.replica_urls, start=1):
            stack.wait_until_up(f"parley-{index}", f"{url}/readyz")

        victoria_port = free_port()
        stack.victoria_url = f"http://127.0.0.1:{victoria_port}"
        stack.start(
            "victoria-metrics",
            [
                victoria,
                f"-storageDataPath={workdir / 'victoria'}",
                f"-httpListenAddr=127.0.0.1:{victoria_port}",
                "-retentionPeriod=1d",
                # Answer with the newest samples (the default hides the last 30 s).
                "-search.latencyOffset=0s",
                "-search.disableCache",
            ],
        )
        stack.wait_until_up("victoria-metrics", f"{stack.victoria_url}/health")

        balancer_port = free_port()
        config = workdir / "haproxy.cfg"
        config.write_text(_haproxy_config(balancer_port, ports))
        stack.start("haproxy", [haproxy, "-f", str(config), "-db"])
        stack.balancer_url = f"http://127.0.0.1:{balancer_port}"
        stack.wait_until_up("haproxy", f"{stack.balancer_url}/healthz")

        prometheus_port = free_port()
        (workdir / "prometheus.yml").write_text(
            _prometheus_config(
                [url.removeprefix("http://") for url in stack.replica_urls],
                stack.victoria_url,
                interval,
            )
        )
        stack.start(
            "prometheus",
            [
                prometheus,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--log.level=warn",
            ],
        )
        stack.prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        stack.wait_until_up("prometheus", f"{stack.prometheus_url}/-/ready")
        yield stack
    finally:
        stack.stop_all(say)


# `make replicas` keeps its data apart from the test suite's database (`test`), which the
# tests empty.
REPLICAS_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/parley_replicas"


def _dashboard(stack: Replicas) -> str:
    """The dashboard page on Prometheus, served like `make stack` does, if npm is here."""
    page = ROOT / "deploy" / "dashboard"
    npm = shutil.which("npm")
    if npm is None:
        return "(npm is missing: no dashboard page)"
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=page, check=True)
    port = free_port()
    stack.start(
        "dashboard",
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(page),
            str(port),
        ],
    )
    stack.wait_until_up("dashboard", f"http://127.0.0.1:{port}/panels.json")
    return f"http://127.0.0.1:{port}/?prometheus={stack.prometheus_url}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops everything in order too, as Ctrl-C does


def main() -> int:
    """``make replicas``: the stack on this machine's PostgreSQL until Ctrl-C."""
    # Its processes run in sessions of their own (a terminal's Ctrl-C reaches this one
    # only): dying without stopping them would leave them running.
    signal.signal(signal.SIGTERM, _interrupt)
    database_url = os.environ.get("PARLEY_DATABASE_URL", REPLICAS_DATABASE_URL)
    try:
        asyncio.run(ensure_database(database_url))
    except ValueError as error:
        raise SystemExit(f"make replicas: {error}") from error
    workdir = Path(tempfile.mkdtemp(prefix="parley-replicas-"))
    shown = make_url(database_url).render_as_string(hide_password=True)
    print(f"starting 3 replicas of parley serve on {shown} (PARLEY_DATABASE_URL picks another)")
    try:
        with replicas(workdir, database_url, fast=False, say=print) as stack:
            dashboard = _dashboard(stack)
            print(
                "Parley's defaults: the simulated LLM at its own pace (PARLEY_SIM_*), rate\n"
                "limits on (PARLEY_RATE_LIMIT_PER_MINUTE), authentication off; HAProxy sets\n"
                "X-Forwarded-For, which the replicas trust.\n"
                f"Parley through HAProxy: {stack.balancer_url}/docs\n"
                + "".join(
                    f"  replica {index}:           {url}/metrics\n"
                    for index, url in enumerate(stack.replica_urls, start=1)
                )
                + f"Prometheus:            {stack.prometheus_url}/classic/targets\n"
                f"VictoriaMetrics:       {stack.victoria_url}/api/v1/query?query=up\n"
                "                       (the remote_write target; Debian's has no UI)\n"
                f"Dashboard:             {dashboard}\n"
                f"Traffic:               .venv/bin/parley demo --url {stack.balancer_url}\n"
                f"logs in {workdir}; Ctrl-C stops everything in seconds",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
            print("stopping, newest first")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
