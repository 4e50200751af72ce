"""Headless Chromium (Debian's package) driven over the DevTools protocol with the
``websockets`` client: open a page, evaluate JavaScript in it, take a screenshot."""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.support.ports import free_port
from tests.support.processes import stop
from tests.support.tools import require_tool


class Browser:
    def __init__(self, workdir: Path, *, width: int = 1400, height: int = 2600) -> None:
        self.binary = require_tool("chromium")
        self.workdir = workdir
        self.port = free_port()
        self.width, self.height = width, height
        self._process: subprocess.Popen[bytes] | None = None
        self._page: ClientConnection | None = None
        self._connections = ExitStack()
        self._ids = itertools.count(1)

    def __enter__(self) -> Browser:
        self._process = subprocess.Popen(
            [
                self.binary,
                "--headless=new",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={self.workdir / 'chromium'}",
                f"--remote-debugging-port={self.port}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                targets = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=2).json()
                page = next(t for t in targets if t["type"] == "page")
                break
            except (httpx.TransportError, StopIteration, ValueError):
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError("chromium did not start") from None
                time.sleep(0.2)
        self._page = self._connections.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None)
        )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._connections.close()
        if self._process is not None:
            stop(self._process)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._page is not None
        ident = next(self._ids)
        self._page.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._page.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return answer["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
