"""The command line: version, help that a person can read, and values it refuses."""

from __future__ import annotations

import pytest

from parley import __version__
from parley.cli import main


def test_version_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"parley {__version__}"


def test_help_is_plain_text_and_lists_the_environment_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = capsys.readouterr().out
    assert "``" not in text  # no raw reST
    for variable in ("PARLEY_DATABASE_URL", "GROQ_API_KEY", "PARLEY_API_KEYS", "PARLEY_PORT"):
        assert variable in text


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "0"],
        ["--port", "70000"],
        ["--port", "http"],
        ["--workers", "0"],
        ["--workers", "-2"],
    ],
)
def test_invalid_ports_and_worker_counts_are_refused(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["serve", *args])
    assert refused.value.code == 2
    assert "invalid" in capsys.readouterr().err
