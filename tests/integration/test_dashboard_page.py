"""The Grafana-free dashboard page (deploy/dashboard), in headless Chromium against a real
Prometheus scraping a Parley that `parley demo` drove: every panel draws data, and the
test leaves a screenshot (dashboard.png in its temporary directory)."""

from __future__ import annotations

import asyncio
import functools
import io
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from parley import demo
from parley.app import create_app
from tests.conftest import make_settings
from tests.support.browser import Browser
from tests.support.live_server import LiveServer
from tests.support.otlp import receiving_traces
from tests.support.prometheus import PrometheusServer
from tests.support.tools import require_tool
from tests.support.waiting import wait_until

# One test process for the module (make test runs several): its fixture starts once.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("dashboard_page")]

PAGE = Path(__file__).parents[2] / "deploy" / "dashboard"
# Chart panels that have data but whose chart cannot show it: no chart, a scale that is
# not finite (a NaN handed to uPlot left an empty frame while the "points" count passed),
# a point outside the scale, or more series than the legend shows.
UNDRAWN = """
[...document.querySelectorAll('.panel.timeseries')]
  .filter(panel => panel.dataset.points !== '0')
  .map(panel => {
    const title = panel.querySelector('h3').textContent;
    const chart = panel.plot;
    if (!chart) return title + ': no chart';
    const {min, max} = chart.scales.y;
    const values = chart.data.slice(1).flat().filter(v => v !== null);
    if (!Number.isFinite(min) || !Number.isFinite(max)) return `${title}: scale ${min}..${max}`;
    if (!values.length) return title + ': no point drawn';
    if (values.some(v => !Number.isFinite(v) || v < min || v > max)) return title + ': off scale';
    if (chart.series.length - 1 > 8) return title + ': too many series';
    return null;
  })
  .filter(Boolean)
"""


@pytest.fixture(scope="module")
def page_server() -> Iterator[str]:
    """deploy/dashboard as make stack serves it, its pinned uPlot installed by npm ci."""
    require_tool("chromium")
    npm = require_tool("npm")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=PAGE, check=True, capture_output=True
    )
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(PAGE))
    handler.log_message = lambda *_: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_every_panel_draws_data_after_the_demo(page_server: str, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, sim_ttft_seconds=0.01, sim_token_delay_seconds=0.001, llm_max_retries=0
    )
    with (
        LiveServer(create_app(settings)) as parley,
        PrometheusServer(tmp_path / "prometheus", f"127.0.0.1:{parley.port}") as prometheus,
        Browser(tmp_path) as browser,
    ):
        empty: list[str] = []
        deadline = time.monotonic() + 180
        while True:
            # Traffic of every kind (and some failures), then the page, until every panel
            # has points: rates need two scrapes, the SLO rules an evaluation after them.
            asyncio.run(demo.run(demo.Plan(parley.http_url, 3, 60, 30, 0.2, None), io.StringIO()))
            browser.open(f"{page_server}/?prometheus={prometheus.url}&range=600")
            ready = time.monotonic() + 60
            while not browser.evaluate("document.body.dataset.ready === 'true'"):
                assert time.monotonic() < ready, "the page never finished loading"
                time.sleep(0.2)
            empty = browser.evaluate(
                "[...document.querySelectorAll('.panel')]"
                ".filter(p => p.dataset.points === '0').map(p => p.querySelector('h3').textContent)"
            )
            # The error alerts need their rules' evaluation after the failures: the panels
            # can all have data first (a CI run saw no alert yet).
            alerting = browser.evaluate(
                "/pending since|firing since/.test(document.getElementById('alerts').textContent)"
            )
            if (not empty and alerting) or time.monotonic() > deadline:
                break
        panels = browser.evaluate("document.querySelectorAll('.panel').length")
        undrawn = browser.evaluate(UNDRAWN)
        # The window asked for in the URL, and a refresh picker (30 s by default).
        alerts = browser.evaluate("document.getElementById('alerts').textContent")
        picked = browser.evaluate(
            "['range', 'refresh'].map(n => document.querySelector(`select[name=${n}]`).value)"
        )
        # Latency panels list their slowest exemplars: request ids here (tracing off).
        exemplars = browser.evaluate(
            "[...document.querySelectorAll('.exemplars div')].map(line => line.textContent)"
        )
        shot = browser.screenshot(tmp_path / "dashboard.png")
    assert panels >= 15
    assert exemplars, "no panel listed an exemplar"
    assert all(": request " in line for line in exemplars), exemplars
    assert empty == [], f"panels without data: {empty}"
    assert undrawn == [], f"panels with data and no line drawn: {undrawn}"
    assert picked == ["600", "30"]
    # The demo's failures put the error alerts in pending (Alertmanager has no UI here).
    assert "pending since" in alerts or "firing since" in alerts, alerts
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


def test_with_tracing_on_a_latency_panel_links_its_slowest_exemplars_to_their_traces(
    page_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with receiving_traces(monkeypatch) as receiver:
        settings = make_settings(tmp_path, sim_ttft_seconds=0.01, sim_token_delay_seconds=0.001)
        with (
            LiveServer(create_app(settings)) as parley,
            PrometheusServer(tmp_path / "prometheus", f"127.0.0.1:{parley.port}") as prometheus,
            Browser(tmp_path) as browser,
        ):

            def links() -> list[str]:
                asyncio.run(demo.run(demo.Plan(parley.http_url, 2, 30, 10, 0, None), io.StringIO()))
                viewer = "http://traces.example:16686"
                browser.open(f"{page_server}/?prometheus={prometheus.url}&traces={viewer}")
                wait_until(lambda: browser.evaluate("document.body.dataset.ready === 'true'"))
                found: list[str] = browser.evaluate(
                    "[...document.querySelectorAll('.exemplars a')].map(a => a.href)"
                )
                return found

            hrefs = wait_until(links, "exemplars linked to traces", timeout=120, interval=1)
    assert all(h.startswith("http://traces.example:16686/trace/") for h in hrefs), hrefs
    exported = {span.trace_id for span in receiver.spans}
    assert {h.rsplit("/", 1)[1] for h in hrefs} & exported  # the very traces Parley sent
