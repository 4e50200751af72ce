"""The README's examples, run as written: a false example fails here.

The conversation examples run against a started ``parley serve`` (only the port changes,
so the test never collides with a server on 8000): the shell block's commands in one bash
session, the WebSocket block's ``>`` lines sent and its ``<`` lines the frames expected,
in order. The quick start's ``make run``, the metrics one-liner, ``parley demo`` and the
Kubernetes Secret run here too; ``make stack`` runs as written in
``tests/integration/test_stack.py``. Every shell block must be one of these.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from websockets.asyncio.client import connect

from tests.support.live_server import LiveServer
from tests.support.otlp import OtlpReceiver
from tests.support.ports import free_port
from tests.support.processes import shell_in_background
from tests.support.readme import readme_block, readme_blocks
from tests.support.serve import serve_process
from tests.support.tools import require_tool
from tests.support.waiting import wait_until

ROOT = Path(__file__).parents[1]


# The first line of every shell block in the README: each is run by a test below (or,
# for `make stack`, in tests/integration/test_stack.py).
EXAMPLES = (
    "make run",
    "# a goal",
    "CID2=",
    "curl -s localhost:8000/metrics",
    "make stack",
    ".venv/bin/parley demo",
    "kubectl create secret",
    "OTEL_EXPORTER_OTLP_ENDPOINT=",
)

# One test process for the module (make test runs several): its fixture starts once.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("readme")]


def test_every_shell_example_in_the_readme_is_run_by_a_test() -> None:
    unrun = [b for b in readme_blocks() if not b.startswith(EXAMPLES)]
    assert not unrun, f"add each to EXAMPLES and a test that runs it: {unrun}"
    for first_line in EXAMPLES:
        readme_block(first_line)  # each exists, once


def _commands(block: str) -> list[str]:
    """The block's commands: the text between its comment lines."""
    commands: list[str] = []
    for chunk in re.split(r"^#.*$", block, flags=re.MULTILINE):
        if chunk.strip():
            commands.append(chunk.strip())
    return commands


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"PARLEY_SIM_TTFT_SECONDS": "0.01", "PARLEY_SIM_TOKEN_DELAY_SECONDS": "0.001"}
    with serve_process(tmp_path_factory.mktemp("readme"), env=env) as served:
        _SERVER_LOGS[served.url] = served.log
        yield served.url


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[str]:
    """A server of the test's own: an example that follows another in the README (and
    uses what that one made) runs after it there, whatever order the tests run in."""
    env = {"PARLEY_SIM_TTFT_SECONDS": "0.01", "PARLEY_SIM_TOKEN_DELAY_SECONDS": "0.001"}
    with serve_process(tmp_path, env=env) as served:
        _SERVER_LOGS[served.url] = served.log
        yield served.url


# Each server's log, shown when an example fails against it (the example's own output
# is often a pipe's last command only).
_SERVER_LOGS: dict[str, Path] = {}


def _run(script: str, url: str) -> list[str]:
    """Each command's output, in one bash session (so variables carry over)."""
    port = url.rsplit(":", 1)[1]
    script = script.replace("localhost:8000", f"localhost:{port}")
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    separated = "\necho; echo @@@\n".join(_commands(script)) + "\necho; echo @@@\n"
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", separated],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    if done.returncode != 0:
        log = _SERVER_LOGS.get(url)
        tail = log.read_text().splitlines()[-30:] if log is not None else []
        pytest.fail("\n".join([done.stderr, "stdout:", done.stdout, "server log:", *tail]))
    return [part.strip() for part in done.stdout.split("@@@")[:-1]]


def test_the_shell_example_works_as_written(server: str) -> None:
    goal, created, whole, streamed, escalated, conversation = _run(readme_block("# a goal"), server)
    assert json.loads(goal)["id"] == "support"
    assert created == ""  # CID=$(...) prints nothing
    turn = json.loads(whole)
    assert turn["reply"]["content"]
    assert turn["reply"]["usage"]["total_tokens"] > 0
    events = re.findall(r"^event: (\w+)", streamed, flags=re.MULTILINE)
    assert events[0] == "accepted"
    assert "token" in events
    assert events[-1] == "done"
    refused = json.loads(escalated)
    assert refused["reply"] is None
    assert refused["escalation_reason"] == "trigger_phrase"
    loaded = json.loads(conversation)
    assert loaded["status"] == "escalated"
    assert len(loaded["messages"]) == 5  # two turns, their replies, the escalating message


def _frames(block: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The block's shell lines, and its session: (">", sent) and ("<", expected)."""
    shell, session = [], []
    for line in block.splitlines():
        if line.startswith(("> ", "< ")):
            session.append((line[0], line[2:]))
        else:
            shell.append(line)
    return shell, session


def test_the_websocket_example_works_as_written(own_server: str) -> None:
    """It follows the shell example, whose goal it uses: that goal is made first (run
    before the shell example, against their shared server, it answered 404)."""
    server = own_server
    shell, session = _frames(readme_block("CID2="))
    assert shell[-1].startswith(".venv/bin/python -m websockets ws://127.0.0.1:8000/")
    made_goal = _commands(readme_block("# a goal"))[0]
    assert json.loads(_run(made_goal, server)[0])["id"] == "support"
    # Its conversation is made as written; then the client's session is played.
    (cid,) = _run("\n".join([*shell[:-1], 'echo "$CID2"']), server)[-1:]
    url = shell[-1].split()[-1].replace("$CID2", cid.strip())
    url = url.replace("127.0.0.1:8000", server.removeprefix("http://"))
    asyncio.run(_play(url, session))


async def _play(url: str, session: list[tuple[str, str]]) -> None:
    async with asyncio.timeout(30), connect(url) as ws:
        expected: list[str] = []
        for direction, text in session:
            if direction == ">":
                await _expect(ws, expected)
                expected = []
                await ws.send(text)
            else:
                expected.append(text)
        await _expect(ws, expected)


async def _expect(ws: object, expected: list[str]) -> None:
    """The frames written, in order: ``...`` stands for more tokens, ``{...}`` for any
    value, token texts and token counts vary; every other value must match."""
    if not expected:
        return
    received: list[dict[str, object]] = []
    while not received or received[-1]["type"] not in ("done", "escalated", "error"):
        received.append(json.loads(await ws.recv()))  # type: ignore[attr-defined]
    written = [json.loads(line.replace("{...}", "null")) for line in expected if line != "..."]
    kinds = [str(frame["type"]) for frame in received]
    assert [k for k in kinds if k != "token"] == [
        str(w["type"]) for w in written if w["type"] != "token"
    ], received
    for wanted in written:
        frame = received[kinds.index(str(wanted["type"]))]
        for key, value in wanted.items():
            if value is not None and key != "content" and not isinstance(value, dict):
                assert frame[key] == value, (key, frame)


def _command(line: str) -> str:
    """A README line without its trailing comment."""
    return line.split("  #", 1)[0].strip()


def _interrupt(process: subprocess.Popen[bytes]) -> int:
    """Ctrl-C, as a terminal sends it: to the whole process group."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_quick_start_serves_as_written(tmp_path: Path) -> None:
    run, test = readme_block("make run").splitlines()
    # make test is this very suite, and CI runs it as written.
    assert _command(test) in (ROOT / ".ci" / "run").read_text().splitlines()
    port = free_port()
    database = tmp_path / "quick.db"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PARLEY_", "GROQ_", "PROMETHEUS_MULTIPROC"))
    }
    # Where it listens and stores are the two settings changed: the test's own port and
    # file, not a developer's server on 8000 or their ./parley.db.
    env |= {"PARLEY_PORT": str(port), "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        served = subprocess.Popen(
            ["bash", "-c", _command(run)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/readyz").status_code == 200,
            "make run",
            timeout=120,
            ignoring=(httpx.TransportError,),
        )
        assert "conversation_turns_total" in httpx.get(f"{url}/metrics").text
        # No API key anywhere, and a reply still comes: the simulated LLM answered.
        with httpx.Client(base_url=url, timeout=30) as http:
            goal = {"name": "Quick", "instructions": "Help."}
            assert http.post("/v1/goals/", json=goal).status_code == 201
            conversation = http.post("/v1/conversations/", json={"goal_id": "quick"}).json()
            turn = http.post(
                f"/v1/conversations/{conversation['id']}/messages", json={"content": "Hi"}
            )
            assert turn.status_code == 200, turn.text
            assert turn.json()["reply"]["content"]
        assert database.exists()  # SQLite
    finally:
        code = _interrupt(served)
    output = log.read_text()
    # make re-raises the Ctrl-C it got (a shell shows no error for it); parley stopped
    # cleanly under it.
    assert code in (0, -signal.SIGINT), output
    assert "Traceback" not in output, output
    assert "make: ***" not in output, output


def test_the_traces_example_exports_a_turns_spans_as_written(tmp_path: Path) -> None:
    """``make run`` with the README's OTEL_* variables (its endpoint on a receiver here):
    a request the caller sampled is traced, with the service name it set."""
    receiver = OtlpReceiver()
    with LiveServer(receiver.app) as otlp:
        # As written, but for the endpoint: this test's receiver, not a collector on 4318.
        command = readme_block("OTEL_EXPORTER_OTLP_ENDPOINT=").replace(
            "http://127.0.0.1:4318", otlp.http_url
        )
        port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PARLEY_", "GROQ_", "PROMETHEUS_MULTIPROC", "OTEL_"))
        }
        database = f"sqlite+aiosqlite:///{tmp_path / 'traced.db'}"
        env |= {"PARLEY_PORT": str(port), "PARLEY_DATABASE_URL": database}
        with (tmp_path / "make-run.log").open("wb") as out:
            served = subprocess.Popen(
                ["bash", "-c", command],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        sampled = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
        try:
            wait_until(
                lambda: httpx.get(f"{url}/readyz").status_code == 200,
                "make run",
                timeout=120,
                ignoring=(httpx.TransportError,),
            )
            goal = {"name": "Traced", "instructions": "Help."}
            assert httpx.post(f"{url}/v1/goals/", json=goal, headers=sampled).status_code == 201
        finally:
            _interrupt(served)  # the spans are flushed as it stops
        wait_until(lambda: receiver.named("POST /v1/goals/"), "the request's span")
    (span,) = receiver.named("POST /v1/goals/")
    assert span.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span.resource["service.name"] == "parley"


def test_the_metrics_example_works_as_written(server: str) -> None:
    (lines,) = _run(readme_block("curl -s localhost:8000/metrics"), server)
    names = {line.split("{")[0].split(" ")[0] for line in lines.splitlines()}
    assert names == {
        "http_requests_total",
        "llm_ttft_seconds_count",
        "llm_tokens_used_total",
        "conversations_active",
        "escalations_total",
    }


@pytest.mark.parametrize(
    ("line", "shows"),
    [
        (0, re.compile(r"\b([1-9]\d*) turns, .*, 0 errors")),
        (1, re.compile(r"\b[1-9]\d* errors")),
    ],
    ids=["traffic", "failures"],
)
def test_the_demo_examples_work_as_written(
    server: str, tmp_path: Path, line: int, shows: re.Pattern[str]
) -> None:
    command = _command(readme_block(".venv/bin/parley demo").splitlines()[line])
    log = tmp_path / "demo.log"
    env = {**os.environ, "PARLEY_PORT": server.rsplit(":", 1)[1]}
    demo = shell_in_background(command, ROOT, log, env)
    try:
        wait_until(lambda: shows.search(log.read_text()), f"{command}: {shows.pattern}", timeout=60)
    finally:
        # It runs for minutes as written; Ctrl-C ends it early, and cleanly.
        assert _interrupt(demo) == 0, log.read_text()


def test_the_kubernetes_secret_example_has_every_key_the_deployment_reads() -> None:
    require_tool("kubectl")
    command = readme_block("kubectl create secret").rstrip()
    made = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f"{command} --dry-run=client -o json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    secret = json.loads(made.stdout)
    deployment = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    spec = deployment["spec"]["template"]["spec"]
    read = {
        variable["valueFrom"]["secretKeyRef"]["key"]
        for container in spec["containers"] + spec.get("initContainers", [])
        for variable in container.get("env", [])
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    assert secret["metadata"]["name"] == "parley"
    assert set(secret["data"]) == read


def test_the_prometheus_adapter_rule_serves_the_autoscalers_metric() -> None:
    (rule,) = yaml.safe_load(readme_block("rules:", "yaml"))["rules"]
    autoscaler = yaml.safe_load(
        (ROOT / "deploy" / "kubernetes" / "horizontalpodautoscaler.yaml").read_text()
    )
    (metric,) = autoscaler["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert rule["seriesQuery"].startswith(name + "{")
    assert rule["name"]["as"] == name


def test_the_python_client_example_works_as_written(server: str) -> None:
    (block,) = readme_blocks("python")
    script = block.replace("127.0.0.1:8000", server.removeprefix("http://"))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) >= 3
    whole, streamed = lines[0], lines[1]
    assert whole
    assert streamed
    assert lines[-1] == "Done"
    assert lines[2] == "Accepted"
