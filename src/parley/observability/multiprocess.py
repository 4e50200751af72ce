"""prometheus_client's multiprocess mode: one directory of value files, shared by workers."""

from __future__ import annotations

import glob
import os
import re
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.platform_collector import PlatformCollector

ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db$")


def directory() -> str | None:
    return os.environ.get(ENV) or None


def prepare(path: str | Path) -> Path:
    """Empty (or create) the directory: values from an earlier run must not leak in."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Exited, not yet reaped by its parent: uvicorn's supervisor reaps a dead worker
    only between health checks of the others, which can take seconds. A zombie holds no
    connection, so its share of a live gauge goes now (Linux; elsewhere, at reaping)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def clean_dead_workers(path: str) -> list[int]:
    """Drop the live-gauge files of workers that have exited; returns their pids."""
    dead = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = _LIVE_FILE.search(name)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]  # untyped upstream
    return sorted(dead)


def registry(path: str) -> CollectorRegistry:
    """A registry that merges every worker's values, for one scrape.

    Per-process collectors (CPU, memory, GC) cannot be summed across workers and are
    left out; the platform's details are the same in every worker.
    """
    clean_dead_workers(path)
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]  # untyped upstream
    PlatformCollector(registry=merged)
    return merged
