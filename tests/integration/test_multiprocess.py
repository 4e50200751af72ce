"""``parley serve --workers 2``: one scrape shows the sum across workers, and the workers
start on a machine busier than they are."""

from __future__ import annotations

import asyncio
import glob
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from parley.observability.multiprocess import clean_dead_workers
from tests.support.serve import serve, serve_process

pytestmark = pytest.mark.integration


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _pids(directory: Path, kind: str) -> set[int]:
    return {
        int(m.group(1))
        for f in directory.iterdir()
        if (m := re.match(rf"{kind}_(\d+)\.db$", f.name))
    }


def test_workers_starting_on_a_saturated_machine_are_not_killed(tmp_path: Path) -> None:
    # Eight busy processes per core: a spawned worker gets a fraction of a core while it
    # imports, and answers uvicorn's first health-check ping late. With uvicorn's 5 s
    # the supervisor killed it ("Child process died") over and over; reproduced here
    # before WORKER_HEALTHCHECK_SECONDS.
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(8 * (os.cpu_count() or 1))
    ]
    try:
        with serve_process(tmp_path, "--workers", "2") as served:
            deadline = time.monotonic() + 120
            while served.log.read_text().count("Application startup complete") < 2:
                assert time.monotonic() < deadline, "the second worker never started"
                time.sleep(0.2)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    log = served.log.read_text()
    assert "died" not in log, log


def test_two_workers_report_the_sum_of_their_counts(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale file from an earlier run")
    with serve(
        tmp_path, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    ) as url:
        assert not (metrics_dir / "counter_1.db").exists()  # emptied at start
        goal = {"id": "g", "name": "G", "instructions": "Help."}
        httpx.post(f"{url}/v1/goals/", json=goal).raise_for_status()
        for _ in range(3):
            httpx.post(f"{url}/v1/conversations/", json={"goal_id": "g"}).raise_for_status()
        for _ in range(40):
            with httpx.Client() as fresh_connection:  # new connections spread over workers
                assert fresh_connection.get(f"{url}/healthz").status_code == 200
        samples = _samples(url)
        assert len(_pids(metrics_dir, "counter")) == 2  # both workers wrote values
    key = ("http_requests_total", (("method", "GET"), ("path", "/healthz"), ("status", "200")))
    assert samples[key] == 40
    assert samples[("conversations_created_total", (("goal_id", "g"),))] == 3
    assert samples[("conversations_active", ())] == 3
    assert samples[("ws_connections_active", ())] == 0


async def _open_socket_then_kill_its_worker(url: str, metrics_dir: Path) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url) as http:
        await http.post("/v1/goals/", json={"id": "g", "name": "G", "instructions": "Help."})
        conversation = (await http.post("/v1/conversations/", json={"goal_id": "g"})).json()
        ws_url = url.replace("http", "ws") + f"/v1/conversations/{conversation['id']}/ws"
        async with connect(ws_url) as socket:
            await socket.send('{"type": "ping"}')
            await socket.recv()
            before = _gauge(await http.get("/metrics"))
            holder = _worker_holding_the_socket(metrics_dir)
            os.kill(holder, signal.SIGKILL)
            # Until uvicorn's supervisor reaps it, the dead worker is a zombie and looks
            # alive; give it a few seconds.
            for _ in range(40):
                await asyncio.sleep(0.25)
                after = _gauge(await http.get("/metrics"))
                if after == 0:
                    break
    return {"before": before, "after": after}


def _gauge(response: httpx.Response) -> float:
    for family in text_string_to_metric_families(response.text):
        if family.name == "ws_connections_active":
            return family.samples[0].value
    raise AssertionError("ws_connections_active missing")


def _worker_holding_the_socket(metrics_dir: Path) -> int:
    for path in glob.glob(str(metrics_dir / "gauge_livesum_*.db")):
        # prometheus_client leaves merge untyped.
        for metric in MultiProcessCollector.merge([path]):  # type: ignore[no-untyped-call]
            if metric.name == "ws_connections_active" and any(s.value == 1 for s in metric.samples):
                return int(re.search(r"_(\d+)\.db$", path).group(1))  # type: ignore[union-attr]
    raise AssertionError("no worker holds the socket")


def test_a_dead_workers_connections_leave_the_gauge(tmp_path: Path) -> None:
    """A worker killed with an open WebSocket: its share of the gauge goes with it."""
    metrics_dir = tmp_path / "metrics"
    with serve(
        tmp_path, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    ) as url:
        gauge = asyncio.run(_open_socket_then_kill_its_worker(url, metrics_dir))
    assert gauge == {"before": 1, "after": 0}


def _alive(pid: int) -> bool:
    """Running, not ended (an orphan's zombie may wait long to be reaped here)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_server_whose_supervisor_dies_leaves_no_worker_running(tmp_path: Path) -> None:
    """A fresh-clone run found a worker of this module's server still running, an orphan,
    twenty minutes after its test: the workers of a server a test started end with it,
    even when its supervisor does not stop them (here it is killed)."""
    with serve_process(tmp_path, "--workers", "2") as served:
        deadline = time.monotonic() + 120
        while served.log.read_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, "the second worker never started"
            time.sleep(0.2)
        pid = served.process.pid
        workers = [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
        assert len(workers) >= 2, workers
        served.process.kill()  # the supervisor dies; its workers would live on
        served.process.wait()
        assert any(_alive(worker) for worker in workers)  # orphans, until the block ends
    deadline = time.monotonic() + 30
    while any(_alive(worker) for worker in workers):
        assert time.monotonic() < deadline, "a worker outlived its server"
        time.sleep(0.1)


def test_clean_dead_workers_removes_only_dead_live_gauges(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    alive_pid = os.getpid()
    for name in (
        f"gauge_livesum_{dead_pid}.db",
        f"gauge_livesum_{alive_pid}.db",
        f"counter_{dead_pid}.db",
    ):
        (tmp_path / name).write_bytes(b"")
    assert clean_dead_workers(str(tmp_path)) == [dead_pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"gauge_livesum_{alive_pid}.db", f"counter_{dead_pid}.db"]
    )


def test_a_worker_that_exited_but_is_not_yet_reaped_counts_as_dead(tmp_path: Path) -> None:
    """uvicorn's supervisor reaps a dead worker only between health checks of the others;
    until then it is a zombie, which os.kill(pid, 0) still finds. Its live gauges go."""
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    # Exited, and deliberately not waited for: a zombie until the end of the test.
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.05)
    (tmp_path / f"gauge_livesum_{zombie.pid}.db").write_bytes(b"")
    try:
        assert clean_dead_workers(str(tmp_path)) == [zombie.pid]
    finally:
        zombie.wait()
