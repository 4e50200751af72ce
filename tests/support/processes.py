"""Stopping the processes a test started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path


def stop(
    process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM, timeout: float = 15
) -> None:
    """Ask the process to stop with ``how``; kill it if it has not within ``timeout``."""
    if process.poll() is None:
        process.send_signal(how)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def kill_what_is_left(process: subprocess.Popen[bytes]) -> None:
    """Kill whatever is left in the process group of ``process`` (one started in a session
    of its own), once ``process`` itself has ended: the workers of a ``--workers``
    server whose supervisor did not stop them (it was killed, or it exited while it was
    starting one). They would otherwise run on beside the next tests."""
    with contextlib.suppress(ProcessLookupError):  # nothing left
        os.killpg(process.pid, signal.SIGKILL)


def shell_in_background(
    command: str, cwd: Path, log: Path, env: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    """``bash -c command`` as a terminal runs it, its output in ``log``, in a session of its
    own (so a test can send Ctrl-C to its whole process group)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
