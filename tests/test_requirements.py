"""The runtime lock (make run, the Docker image) is the dev lock's runtime part: the same
versions, none of the test, lint or benchmark tools."""

from __future__ import annotations

import re
from pathlib import Path

REQUIREMENTS = Path(__file__).parents[1] / "requirements"
_PIN = re.compile(r"^([a-z0-9][a-z0-9._-]*)==([^ \\]+)", re.MULTILINE)


def _pins(name: str) -> dict[str, str]:
    return dict(_PIN.findall((REQUIREMENTS / name).read_text()))


def test_the_runtime_lock_is_the_dev_locks_runtime_part() -> None:
    runtime, dev = _pins("runtime.txt"), _pins("lock.txt")
    assert {"fastapi", "uvicorn", "sqlalchemy", "groq", "prometheus-client"} <= set(runtime)
    assert {name: dev.get(name) for name in runtime} == runtime
    assert not {"pytest", "mypy", "ruff", "grafana-foundation-sdk", "schemathesis"} & set(runtime)
