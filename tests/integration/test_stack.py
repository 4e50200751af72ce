"""`make stack`, as the README writes it: Parley, Prometheus and Alertmanager come up
together, the demo fills them, and Ctrl-C takes them down together."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.processes import shell_in_background
from tests.support.readme import readme_block
from tests.support.tools import require_tool
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]


def _wait(check: Callable[[], object], timeout: float = 60) -> None:
    wait_until(check, check, timeout=timeout, interval=0.5, ignoring=(httpx.TransportError,))


def _urls(text: str) -> list[str]:
    """The local addresses a text gives to open; not one passed as a flag's value."""
    return sorted(
        {url for url in re.findall(r"(?<![=\w])http://127\.0\.0\.1:[^\s<>)`\";,]+", text)}
    )


def test_stack_scrapes_parley_and_reaches_alertmanager(tmp_path: Path) -> None:
    require_tool("prometheus")
    require_tool("prometheus-alertmanager")
    names = (
        "PARLEY_PORT",
        "PROMETHEUS_PORT",
        "ALERTMANAGER_PORT",
        "WEBHOOK_PORT",
        "DASHBOARD_PORT",
    )
    ports = {name: free_port() for name in names}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "STACK_DIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # The README's command, as written (its ports and state directory from the
    # environment, as the README says they can be).
    command = readme_block("make stack").split("  #", 1)[0].strip()
    assert command.startswith("make stack DEMO_ARGS=")
    banner = tmp_path / "stack.out"
    stack = shell_in_background(command, ROOT, banner, env)
    prometheus = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
    try:
        _wait(
            lambda: httpx.get(f"http://127.0.0.1:{ports['PARLEY_PORT']}/readyz").status_code == 200
        )

        def parley_scraped() -> bool:
            targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
            return any(t["labels"]["job"] == "parley" and t["health"] == "up" for t in targets)

        _wait(parley_scraped)
        _wait(
            lambda: httpx.get(f"{prometheus}/api/v1/alertmanagers").json()["data"][
                "activeAlertmanagers"
            ]
        )
        _wait(
            lambda: (
                httpx.get(f"http://127.0.0.1:{ports['ALERTMANAGER_PORT']}/-/ready").status_code
                == 200
            )
        )
        rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
        assert {group["name"] for group in rules} == {"parley.recording", "parley.alerts"}

        def demo_traffic_scraped() -> bool:
            answer = httpx.get(
                f"{prometheus}/api/v1/query",
                params={"query": "sum(conversation_turns_total{outcome='ok'}) > 0"},
            ).json()
            return bool(answer["data"]["result"])

        _wait(demo_traffic_scraped)
        # Alertmanager's webhooks reach the stack's receiver, which logs them.
        # Alertmanager's webhook payload: each logged line says when, what, why, and
        # where the runbook is (it carried the labels only).
        alert = {
            "status": "firing",
            "labels": {"alertname": "Test", "severity": "critical"},
            "annotations": {
                "summary": "Something broke",
                "description": "It broke at 10%.",
                "runbook_url": "http://runbook.example/#test",
            },
            "startsAt": "2026-12-04T10:00:00Z",
        }
        httpx.post(
            f"http://127.0.0.1:{ports['WEBHOOK_PORT']}/page",
            json={"status": "firing", "alerts": [alert]},
        ).raise_for_status()
        logged = json.loads((tmp_path / "alerts.log").read_text().splitlines()[-1])
        assert logged["receiver"] == "page"
        assert logged["received_at"]
        assert logged["alerts"] == [
            {
                "status": "firing",
                "starts_at": "2026-12-04T10:00:00Z",
                "ends_at": None,
                "labels": alert["labels"],
                "summary": "Something broke",
                "description": "It broke at 10%.",
                "runbook_url": "http://runbook.example/#test",
            }
        ]
        # The dashboard page and its pinned chart library are served.
        dashboard = f"http://127.0.0.1:{ports['DASHBOARD_PORT']}"
        _wait(lambda: httpx.get(f"{dashboard}/panels.json").status_code == 200)
        assert httpx.get(f"{dashboard}/node_modules/uplot/dist/uPlot.iife.min.js").is_success
        # The runbook every alert links to by default (on DASHBOARD_PORT, 9096).
        runbook = httpx.get(f"{dashboard}/runbook.html")
        assert runbook.status_code == 200
        assert '<section id="turnavailabilitybudgetburn">' in runbook.text
        # Every address the banner prints and the README gives (on this stack's ports)
        # answers 200 with content: /targets and Alertmanager's UI were 404s on Debian.
        _wait(lambda: b"Ctrl-C stops everything" in banner.read_bytes())
        printed = _urls(banner.read_text())
        assert len(printed) >= 8, printed
        by_default_port = {
            "8000": "PARLEY_PORT",
            "9090": "PROMETHEUS_PORT",
            "9093": "ALERTMANAGER_PORT",
            "9096": "DASHBOARD_PORT",
        }
        documented = [
            re.sub(r":(\d+)", lambda m: f":{ports[by_default_port[m[1]]]}", url, count=1)
            for url in _urls((ROOT / "README.md").read_text())
        ]
        for url in printed + documented:
            answer = httpx.get(url, follow_redirects=True)
            assert answer.status_code == 200, url
            assert answer.content.strip(), url
    finally:
        os.killpg(stack.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it: to the group
        stack.wait(timeout=30)
        output = banner.read_bytes()
    assert b"Prometheus" in output
    # Ctrl-C is how a stack ends: the script stops everything and says so, and make
    # reports no error (it re-raises the Ctrl-C it got, which a shell does not report).
    assert b"stack stopped" in output, output[-2000:]
    assert b"make: ***" not in output, output[-2000:]
    assert stack.returncode in (0, -signal.SIGINT), output[-2000:]
    for port in ports.values():
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
