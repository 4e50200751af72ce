"""Stopping the processes a test started."""

from __future__ import annotations

import signal
import subprocess


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
