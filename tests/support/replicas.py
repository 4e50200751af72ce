"""Parley as it runs beyond one machine, on one machine: N replicas of ``parley serve`` on
one PostgreSQL behind HAProxy, each scraped by Prometheus (the mixin's rules loaded,
``cluster``/``env`` external labels), which remote-writes everything to VictoriaMetrics.

The integration test (tests/integration/test_replicas.py) and ``make replicas``
(``python -m tests.support.replicas``: up until Ctrl-C) start it the same way; every
process is started and stopped here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import yaml

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

    def stop_all(self) -> None:
        # Newest first, one at a time: Prometheus flushes its remote-write queue to a
        # VictoriaMetrics that is still up, HAProxy goes before the replicas.
        for process in reversed(list(self.processes.values())):
            stop(process.popen, timeout=30)
        for handle in self._logs:
            handle.close()


def _parley_env(database_url: str) -> dict[str, str]:
    return {
        "PARLEY_DATABASE_URL": database_url,
        "PARLEY_AUTO_MIGRATE": "false",  # migrated once, before the replicas start
        "PARLEY_LLM_PROVIDER": "simulated",
        "PARLEY_SIM_TTFT_SECONDS": "0.01",
        "PARLEY_SIM_TOKEN_DELAY_SECONDS": "0.001",
        "PARLEY_RATE_LIMIT_PER_MINUTE": "0",
        "PARLEY_LOG_LEVEL": "WARNING",
        "PARLEY_GOAL_CACHE_SECONDS": "0",
        "PARLEY_SHUTDOWN_GRACE_SECONDS": "2",  # stops quickly when the test ends
        "PARLEY_TRUSTED_PROXIES": "127.0.0.1",  # HAProxy, which sets X-Forwarded-For
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
    workdir: Path, database_url: str, *, count: int = 3, interval: str = "1s"
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
        ports = [free_port() for _ in range(count)]
        for index, port in enumerate(ports, start=1):
            stack.start(
                f"parley-{index}",
                [parley, "serve", "--port", str(port)],
                _parley_env(database_url),
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
        stack.stop_all()


def main() -> int:
    """``make replicas``: the stack on this machine's PostgreSQL until Ctrl-C."""
    database_url = os.environ.get(
        "PARLEY_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    workdir = Path(tempfile.mkdtemp(prefix="parley-replicas-"))
    try:
        with replicas(workdir, database_url) as stack:
            print(f"Parley through HAProxy: {stack.balancer_url}")
            for url in stack.replica_urls:
                print(f"  replica:             {url}")
            print(f"Prometheus:            {stack.prometheus_url}")
            print(f"VictoriaMetrics:       {stack.victoria_url} (remote_write target)")
            print(f"logs in {workdir}; Ctrl-C stops everything")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
