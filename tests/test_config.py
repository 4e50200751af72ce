"""Settings errors name the environment variable and what is allowed, never the value."""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from parley.api.body_limit import BodySizeLimitMiddleware
from parley.api.schemas import EscalationPolicyIn
from parley.config import Settings, SettingsError, load_settings, unknown_variables
from parley.domain.chat import ChatLimits
from parley.domain.models import EscalationPolicy
from parley.llm.gateway import LLMGateway, RetryPolicy
from parley.llm.groq import GroqProvider
from parley.llm.simulated import SimulatedTiming
from parley.store.database import EngineOptions

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


@pytest.mark.integration
def test_parley_serve_reports_bad_settings_in_plain_lines_and_exits_2() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PARLEY_API_KEYS": " ",
        "PARLEY_METRICS_TOKEN": SECRET,
        "PARLEY_API_KEY": SECRET,
    }
    result = subprocess.run(
        [sys.executable, "-m", "parley", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "PARLEY_API_KEYS: is set but holds no key" in result.stderr
    assert "PARLEY_API_KEY: not a Parley setting; did you mean PARLEY_API_KEYS?" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


def _default(field: str) -> object:
    return Settings.model_fields[field].default


def _parameter_default(function: Callable[..., object], name: str) -> object:
    return inspect.signature(function).parameters[name].default


def test_every_layer_takes_its_defaults_from_the_same_place() -> None:
    """Settings, the domain's values, the gateway, the store and the API schemas agree on
    every default (parley.defaults), so none can be changed in one place only."""
    limits = ChatLimits()
    assert (
        _default("max_message_chars"),
        _default("llm_history_messages"),
        _default("llm_max_tokens"),
        _default("default_model"),
    ) == (
        limits.max_message_chars,
        limits.history_messages,
        limits.max_reply_tokens,
        limits.default_model,
    )
    retry = RetryPolicy()
    assert (
        _default("llm_max_retries"),
        _default("llm_retry_backoff_seconds"),
        _default("llm_retry_max_wait_seconds"),
    ) == (retry.max_retries, retry.backoff_seconds, retry.max_wait_seconds)
    timeout = _default("llm_timeout_seconds")
    assert _parameter_default(LLMGateway, "timeout_seconds") == timeout
    assert _parameter_default(GroqProvider, "timeout_seconds") == timeout
    assert _parameter_default(GroqProvider, "max_connections") == _default("llm_max_connections")
    engine = EngineOptions()
    assert (
        engine.pool_size,
        engine.max_overflow,
        engine.sqlite_synchronous,
        engine.connect_timeout,
        engine.statement_timeout,
        engine.pool_timeout,
    ) == (
        _default("db_pool_size"),
        _default("db_max_overflow"),
        _default("sqlite_synchronous"),
        _default("db_connect_timeout_seconds"),
        _default("db_statement_timeout_seconds"),
        _default("db_pool_timeout_seconds"),
    )
    body_timeout = _parameter_default(BodySizeLimitMiddleware, "timeout_seconds")
    assert body_timeout == _default("body_timeout_seconds")
    timing = SimulatedTiming()
    assert (_default("sim_ttft_seconds"), _default("sim_token_delay_seconds")) == (
        timing.ttft_seconds,
        timing.token_delay_seconds,
    )
    policy = EscalationPolicyIn().model_dump()
    assert policy == {
        **dataclasses.asdict(EscalationPolicy()),
        "trigger_phrases": list(EscalationPolicy().trigger_phrases),
    }


def test_a_trusted_proxy_that_is_no_address_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """uvicorn would take it as a literal that never matches, silently."""
    monkeypatch.setenv("PARLEY_TRUSTED_PROXIES", "10.0.0.0/8, ingress-nginx")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "PARLEY_TRUSTED_PROXIES" in str(refused.value)
    assert "ingress-nginx" in str(refused.value)
    monkeypatch.setenv("PARLEY_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1, ::1")
    assert load_settings().trusted_proxies == ["10.0.0.0/8", "127.0.0.1", "::1"]


def test_a_metrics_port_equal_to_the_api_port_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_PORT", "8100")
    monkeypatch.setenv("PARLEY_METRICS_PORT", "8100")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "PARLEY_METRICS_PORT must differ from PARLEY_PORT" in str(refused.value)


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [("PARLEY_API_KEY", "PARLEY_API_KEYS"), ("PARLEY_PROT", "PARLEY_PORT")],
)
def test_a_mistyped_variable_stops_start_up_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, suggestion: str
) -> None:
    """PARLEY_API_KEY=k1 (for PARLEY_API_KEYS) started the API with no authentication."""
    monkeypatch.setenv(variable, SECRET)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value).startswith(f"{variable}: not a Parley setting")
    assert f"did you mean {suggestion}?" in str(refused.value)
    assert SECRET not in str(refused.value)


def test_the_tools_own_variables_are_not_mistaken_for_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("PARLEY_DEMO_API_KEY", "PARLEY_TEST_POSTGRES_URL", "PARLEY_BENCH_X"):
        monkeypatch.setenv(variable, "x")
    monkeypatch.setenv("PARLEY_GROQ_BASE_URL", "http://127.0.0.1:1")  # an alias of GROQ_BASE_URL
    assert unknown_variables(os.environ) == []
    load_settings()
