"""External tools the tests use: present in CI (installed by scripts/prepare-tests.sh)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str) -> str:
    """The tool's path; skips locally, fails under CI, when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (scripts/prepare-tests.sh installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
