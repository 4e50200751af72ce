"""The Alertmanager config on a real Alertmanager: pages for critical, tickets for warnings,
and no inhibition that lets one replica's trouble mute a page about the others."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.tools import require_tool
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [("severity=critical", "parley-page"), ("severity=warning", "parley-ticket")],
)
def test_critical_pages_and_warnings_make_tickets(labels: str, receiver: str) -> None:
    amtool = require_tool("amtool")
    routed = subprocess.run(
        [amtool, "config", "routes", "test", f"--config.file={CONFIG}", "alertname=X", labels],
        capture_output=True,
        text=True,
        check=True,
    )
    assert routed.stdout.strip() == receiver


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = require_tool("prometheus-alertmanager")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={CONFIG}",
            f"--storage.path={tmp_path}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _until(condition: Callable[[], object], seconds: float = 30) -> None:
    wait_until(condition, timeout=seconds, interval=0.1, ignoring=(httpx.TransportError,))


def _alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, "severity": severity, "job": "parley", **labels}}


def test_one_replica_down_mutes_only_its_own_alerts(alertmanager: str) -> None:
    alerts = [
        _alert("ParleyTargetDown", "warning", instance="p1:8000"),
        _alert("HighLatency", "warning", instance="p1:8000", path="/v1/goals/"),
        _alert("LLMServiceDown", "critical"),  # about the service, from the others
        _alert("TurnAvailabilityBudgetBurn", "critical", long="1h", short="5m"),
        _alert("TurnAvailabilityBudgetBurn", "warning", long="1d", short="2h"),
    ]
    httpx.post(f"{alertmanager}/api/v2/alerts", json=alerts).raise_for_status()

    def state() -> dict[tuple[str, str], list[str]]:
        listed = httpx.get(f"{alertmanager}/api/v2/alerts").json()
        return {
            (a["labels"]["alertname"], a["labels"]["severity"]): a["status"]["inhibitedBy"]
            for a in listed
        }

    _until(lambda: len(state()) == 5)
    # Inhibitions are computed as alerts arrive; wait until the expected one shows.
    _until(lambda: state()[("HighLatency", "warning")] != [])
    inhibited = state()
    assert inhibited[("LLMServiceDown", "critical")] == []
    assert inhibited[("ParleyTargetDown", "warning")] == []
    assert inhibited[("TurnAvailabilityBudgetBurn", "critical")] == []
    # The slower burn of the same budget is noise next to the page.
    assert inhibited[("TurnAvailabilityBudgetBurn", "warning")] != []


def test_one_cluster_down_mutes_nothing_in_another(alertmanager: str) -> None:
    alerts = [
        _alert("ParleyDown", "critical", cluster="eu", env="prod"),
        _alert("HighErrorRate", "warning", cluster="eu", env="prod"),
        _alert("LLMServiceDown", "critical", cluster="us", env="prod"),
    ]
    httpx.post(f"{alertmanager}/api/v2/alerts", json=alerts).raise_for_status()

    def state() -> dict[tuple[str, str], list[str]]:
        listed = httpx.get(f"{alertmanager}/api/v2/alerts").json()
        return {
            (a["labels"]["alertname"], a["labels"]["cluster"]): a["status"]["inhibitedBy"]
            for a in listed
            if "cluster" in a["labels"]
        }

    _until(lambda: len(state()) == 3)
    _until(lambda: state()[("HighErrorRate", "eu")] != [])
    assert state()[("LLMServiceDown", "us")] == []
