"""A real Prometheus (Debian's package) on loopback, scraping a test's Parley every second."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import yaml

from tests.support.ports import free_port
from tests.support.processes import stop
from tests.support.tools import require_tool
from tests.support.waiting import wait_until

RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "rules"


def with_everything_selected(expr: str) -> str:
    """A dashboard query as Grafana sends it with every variable on "All"."""
    return re.sub(r'=~"\$\w+"', '=~".*"', expr.replace("$__rate_interval", "1m"))


class PrometheusServer:
    def __init__(self, workdir: Path, target: str, *, interval: str = "1s") -> None:
        self.binary = require_tool("prometheus")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = workdir / "rules"
        shutil.copytree(RULES, rules)
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(rules / "*.yml")],
            "scrape_configs": [{"job_name": "parley", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None
        self._log = workdir / "prometheus.log"
        self._log_file: IO[str] | None = None

    def start(self) -> PrometheusServer:
        self._log_file = self._log.open("w")
        self._process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--enable-feature=exemplar-storage",  # the dashboard lists them
                "--log.level=warn",
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self._log.read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus did not become ready")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None:
            stop(self._process)
        if self._log_file is not None:
            self._log_file.close()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; raises on a PromQL error (so a bad expression fails the test)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"query failed: {expr}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, f"{expr} gave {len(result)} series"
        return float(result[0]["value"][1])

    def alerts(self) -> dict[str, str]:
        """Alert name -> state (pending or firing), for active alerts."""
        body = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        return {a["labels"]["alertname"]: a["state"] for a in body["data"]["alerts"]}

    def wait_for(self, check: Any, timeout: float = 30.0) -> Any:
        return wait_until(check, getattr(check, "__name__", check), timeout=timeout, interval=0.25)
