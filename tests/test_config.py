"""Settings errors name the environment variable and what is allowed, never the value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from parley.config import SettingsError, load_settings

SECRET = "topsecretkey-do-not-print"


@pytest.mark.parametrize("keys", [",", " ", " , ,"])
def test_api_keys_that_parse_to_no_key_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, keys: str
) -> None:
    """Such a value silently turned authentication off."""
    monkeypatch.setenv("PARLEY_API_KEYS", keys)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "PARLEY_API_KEYS" in str(refused.value)


def test_an_empty_api_keys_setting_means_auth_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_API_KEYS", "")
    assert load_settings().api_keys == []


def test_errors_name_variables_one_line_each_and_never_echo_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARLEY_API_KEYS", SECRET)
    monkeypatch.setenv("PARLEY_METRICS_TOKEN", SECRET + "-metrics")
    monkeypatch.setenv("GROQ_API_KEY", SECRET + "-groq")
    monkeypatch.setenv("PARLEY_PORT", "eighty")
    monkeypatch.setenv("PARLEY_SIM_FAILURE_RATE", "2")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    text = str(refused.value)
    assert SECRET not in text
    lines = text.splitlines()
    assert any(line.startswith("PARLEY_PORT:") for line in lines), text
    assert any(line.startswith("PARLEY_SIM_FAILURE_RATE:") for line in lines), text
    assert "input_value" not in text


def test_a_database_url_without_an_async_driver_gets_a_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARLEY_DATABASE_URL", "postgresql://user:" + SECRET + "@db/parley")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    text = str(refused.value)
    assert "PARLEY_DATABASE_URL" in text
    assert "postgresql+asyncpg://" in text
    assert SECRET not in text


def test_parley_serve_reports_bad_settings_in_plain_lines_and_exits_2() -> None:
    env = {"PATH": "/usr/bin:/bin", "PARLEY_API_KEYS": " ", "PARLEY_METRICS_TOKEN": SECRET}
    result = subprocess.run(
        [sys.executable, "-m", "parley", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "PARLEY_API_KEYS" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout
