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


def _inhibited_by(alertmanager: str, count: int) -> dict[tuple[str, str], list[str]]:
    def state() -> dict[tuple[str, str], list[str]]:
        listed = httpx.get(f"{alertmanager}/api/v2/alerts").json()
        return {
            (a["labels"]["alertname"], a["labels"]["severity"]): a["status"]["inhibitedBy"]
            for a in listed
        }

    _until(lambda: len(state()) == count)
    return state()


def test_one_replica_down_mutes_no_page(alertmanager: str) -> None:
    alerts = [
        _alert("ParleyTargetDown", "warning", instance="p1:8000"),
        _alert("LLMServiceDown", "critical"),  # about the service, from the others
        _alert("TurnAvailabilityBudgetBurn", "critical", long="15m", short="5m"),
        _alert("TurnAvailabilityBudgetBurn", "warning", long="6h", short="30m"),
    ]
    httpx.post(f"{alertmanager}/api/v2/alerts", json=alerts).raise_for_status()
    # Inhibitions are computed as alerts arrive; wait until the expected one shows.
    _until(lambda: _inhibited_by(alertmanager, 4)[("TurnAvailabilityBudgetBurn", "warning")])
    inhibited = _inhibited_by(alertmanager, 4)
    assert inhibited[("LLMServiceDown", "critical")] == []
    assert inhibited[("ParleyTargetDown", "warning")] == []
    assert inhibited[("TurnAvailabilityBudgetBurn", "critical")] == []


def test_the_turns_page_holds_back_the_api_page_for_the_same_incident(
    alertmanager: str,
) -> None:
    """A whole turn's 502 or a 503 before a turn fails an API request too: one page."""
    alerts = [
        _alert("TurnAvailabilityBudgetBurn", "critical", long="15m", short="5m"),
        _alert("ApiAvailabilityBudgetBurn", "critical", long="15m", short="5m"),
        _alert("ApiAvailabilityBudgetBurn", "critical", cluster="other", long="15m", short="5m"),
    ]
    httpx.post(f"{alertmanager}/api/v2/alerts", json=alerts).raise_for_status()

    def by_cluster() -> dict[tuple[str, str], list[str]]:
        listed = httpx.get(f"{alertmanager}/api/v2/alerts").json()
        return {
            (a["labels"]["alertname"], a["labels"].get("cluster", "")): a["status"]["inhibitedBy"]
            for a in listed
        }

    _until(lambda: len(by_cluster()) == 3 and by_cluster()[("ApiAvailabilityBudgetBurn", "")])
    assert by_cluster()[("TurnAvailabilityBudgetBurn", "")] == []
    assert by_cluster()[("ApiAvailabilityBudgetBurn", "other")] == []


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
