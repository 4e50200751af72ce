"""Settings, read from the environment (``PARLEY_*``, plus Groq's own ``GROQ_*``)."""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import ipaddress
import os
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from parley import defaults


class LLMProviderName(StrEnum):
    SIMULATED = "simulated"
    GROQ = "groq"


class SQLiteSynchronous(StrEnum):
    NORMAL = "normal"
    FULL = "full"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"  # refuses to start with no API key (no open development mode)


class LimiterFailureMode(StrEnum):
    OPEN = "open"  # Redis down: requests pass uncounted (the API stays up)
    CLOSED = "closed"  # Redis down: 503 with Retry-After (limits are never exceeded)


class LogFormat(StrEnum):
    AUTO = "auto"  # pretty on a terminal, JSON otherwise
    JSON = "json"
    CONSOLE = "console"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class WebhookEndpoint(BaseModel):
    """One receiver of the handoff's webhooks (an item of PARLEY_WEBHOOKS, JSON)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(pattern=r"^https?://", max_length=2000)
    secret: SecretStr  # whsec_ and base64, as the Standard Webhooks specification has it
    # Deliveries are kept under it: rename an endpoint and it starts afresh.
    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")

    @field_validator("secret")
    @classmethod
    def _standard_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        key = secret.removeprefix("whsec_")
        try:
            decoded = base64.b64decode(key + "==", validate=True) if key else b""
        except binascii.Error:
            decoded = b""
        if not secret.startswith("whsec_") or len(decoded) < 16:
            raise ValueError("must be whsec_ and at least 16 bytes in base64")
        return value

    @property
    def key(self) -> str:
        """Its name, or one made from its URL (stable while the URL is)."""
        return self.name or "wh-" + hashlib.sha256(self.url.encode()).hexdigest()[:12]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARLEY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    database_url: str = "sqlite+aiosqlite:///./parley.db"
    auto_migrate: bool = True
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.AUTO
    # Messages and replies appear in logs (SDK request dumps, SQL parameters) only if true.
    log_content: bool = False
    env: Environment = Environment.DEVELOPMENT
    # Comma-separated bootstrap admin keys. With none here and none made with `parley keys
    # create`, the API is open (development mode; refused when env is production).
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    max_message_chars: int = Field(default=defaults.MAX_MESSAGE_CHARS, ge=1)
    # On SIGTERM: how long turns in flight get to finish before they are cut.
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    # A request body must arrive whole within this; else 408.
    body_timeout_seconds: float = Field(default=defaults.BODY_TIMEOUT_SECONDS, gt=0)
    # An idle kept-alive connection is closed after this. Longer than the idle timeout
    # of the proxy in front (60 s is common), or the proxy may send a request on a
    # connection just as Parley closes it, and that request is reset.
    keep_alive_seconds: int = Field(default=75, ge=1)

    # ``None`` means: groq when GROQ_API_KEY is set, else simulated.
    llm_provider: LLMProviderName | None = None
    default_model: str = defaults.DEFAULT_MODEL
    llm_timeout_seconds: float = Field(default=defaults.LLM_TIMEOUT_SECONDS, gt=0)
    llm_max_retries: int = Field(default=defaults.LLM_MAX_RETRIES, ge=0, le=10)
    llm_retry_backoff_seconds: float = Field(default=defaults.LLM_RETRY_BACKOFF_SECONDS, ge=0)
    llm_retry_max_wait_seconds: float = Field(default=defaults.LLM_RETRY_MAX_WAIT_SECONDS, ge=0)
    llm_max_tokens: int = Field(default=defaults.MAX_REPLY_TOKENS, ge=1)
    llm_history_messages: int = Field(default=defaults.HISTORY_MESSAGES, ge=1)
    llm_max_connections: int = Field(default=defaults.LLM_MAX_CONNECTIONS, ge=1)
    db_pool_size: int = Field(default=defaults.DB_POOL_SIZE, ge=1)
    db_max_overflow: int = Field(default=defaults.DB_MAX_OVERFLOW, ge=0)
    sqlite_synchronous: SQLiteSynchronous = SQLiteSynchronous(defaults.SQLITE_SYNCHRONOUS)
    db_connect_timeout_seconds: float = Field(default=defaults.DB_CONNECT_TIMEOUT_SECONDS, gt=0)
    db_statement_timeout_seconds: float = Field(default=defaults.DB_STATEMENT_TIMEOUT_SECONDS, gt=0)
    db_pool_timeout_seconds: float = Field(default=defaults.DB_POOL_TIMEOUT_SECONDS, gt=0)
    # How long a turn may use a goal as read before (0: read it every turn). A goal
    # changed on another replica applies to its turns within this many seconds.
    goal_cache_seconds: float = Field(default=5.0, ge=0)
    # Models that get their own metric label; others are counted as "other".
    # Empty: the default model and the models in the price table.
    llm_models: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Requests a minute per API key (per client address with auth off) on /v1; 0: none.
    rate_limit_per_minute: int = Field(default=1200, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    # Invalid API keys a minute per client address before it is refused; 0: no limit.
    auth_failures_per_minute: int = Field(default=20, ge=0)
    # Redis for the rate limits, shared by every replica (redis://host:6379/0); unset: each
    # process counts its own.
    redis_url: SecretStr | None = None
    redis_key_prefix: str = Field(default="parley", min_length=1, max_length=64)
    # Redis unreachable: "open" lets requests through uncounted, "closed" answers 503.
    rate_limit_failure_mode: LimiterFailureMode = LimiterFailureMode.OPEN
    # Webhook receivers, JSON: [{"url": "https://...", "secret": "whsec_...", "name": "crm"}]
    webhooks: list[WebhookEndpoint] = Field(default_factory=list)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_retry_hours: float = Field(default=24.0, gt=0)  # then the delivery is failed
    webhook_backoff_seconds: float = Field(default=1.0, gt=0)  # the first retry's wait
    # The live event streams (parley.defaults): at most this many at once per replica,
    # and a heartbeat on each this often.
    live_max_streams: int = Field(default=defaults.LIVE_MAX_STREAMS, ge=1)
    live_heartbeat_seconds: float = Field(default=defaults.LIVE_HEARTBEAT_SECONDS, gt=0)
    # How often each replica ends the conversations idle past their goal's timeout.
    idle_sweep_seconds: float = Field(default=defaults.IDLE_SWEEP_SECONDS, gt=0)
    # Ended conversations older than this many days are deleted, messages and all (at each
    # sweep, in bounded batches, on every replica); unset: kept until deleted one by one.
    retention_days: int | None = Field(default=None, ge=1, le=36500)
    # The LLM judge (goals with judging on): its model (unset: PARLEY_DEFAULT_MODEL), how
    # often each replica looks at its queue, how many it grades at once, and the attempts
    # a malformed answer or a timeout gets (backoff doubling from the first wait).
    judge_model: str | None = Field(default=None, min_length=1, max_length=200)
    judge_poll_seconds: float = Field(default=defaults.JUDGE_POLL_SECONDS, gt=0)
    judge_concurrency: int = Field(default=defaults.JUDGE_CONCURRENCY, ge=1, le=100)
    judge_max_attempts: int = Field(default=defaults.JUDGE_MAX_ATTEMPTS, ge=1, le=100)
    judge_backoff_seconds: float = Field(default=defaults.JUDGE_BACKOFF_SECONDS, gt=0)
    # Comma-separated browser origins (https://app.example.com) allowed by CORS and by the
    # WebSocket Origin check; empty: same-origin pages and non-browser clients only.
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Comma-separated addresses or CIDRs of the proxies in front whose X-Forwarded-For
    # names the client (for the rate limits and the logs); empty: trust nobody's.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    metrics_token: SecretStr | None = None
    # /metrics on a port of its own (same host), and no longer on PARLEY_PORT: keep the
    # API's port public and this one inside (the scraper's network only).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_cache_seconds: float = Field(default=defaults.METRICS_CACHE_SECONDS, ge=0)
    metrics_goal_label_limit: int = Field(default=100, ge=1)
    # API keys with a key_name label of their own (the oldest made; the rest are "other").
    metrics_key_label_limit: int = Field(default=100, ge=1)
    # How often the goals and keys with a label of their own are read again from the store.
    metrics_goal_refresh_seconds: float = Field(default=30.0, gt=0)

    groq_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GROQ_API_KEY", "PARLEY_GROQ_API_KEY")
    )
    groq_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("GROQ_BASE_URL", "PARLEY_GROQ_BASE_URL")
    )

    # The simulated provider: deterministic text, realistic timing, optional failures.
    sim_ttft_seconds: float = Field(default=defaults.SIM_TTFT_SECONDS, ge=0)
    sim_token_delay_seconds: float = Field(default=defaults.SIM_TOKEN_DELAY_SECONDS, ge=0)
    sim_failure_rate: float = Field(default=0.0, ge=0, le=1)
    sim_seed: int = 0
    # A Groq-like per-minute quota: remaining headroom is reported, and enforced.
    sim_requests_per_minute: int = Field(default=1000, ge=1)
    sim_tokens_per_minute: int = Field(default=1_000_000, ge=1)

    @field_validator("llm_models", "allowed_origins", "trusted_proxies", mode="before")
    @classmethod
    def _parse_lists(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an address or a CIDR (10.0.0.0/8, 127.0.0.1)"
                ) from None
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _keys_or_nothing(cls, value: Any) -> Any:
        # "," or " " used to parse to no key at all, which silently switched auth off.
        keys = _split_csv(value)
        if isinstance(value, str) and value and not keys:
            raise ValueError("is set but holds no key; leave it empty to switch auth off")
        return keys

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        scheme = value.partition("://")[0]
        if scheme in ("postgresql", "postgres", "postgresql+psycopg2", "sqlite"):
            raise ValueError(
                "needs an async driver: postgresql+asyncpg://user@host/db or"
                " sqlite+aiosqlite:///path/to/file.db"
            )
        return value

    @field_validator("webhooks")
    @classmethod
    def _distinct_endpoints(cls, value: list[WebhookEndpoint]) -> list[WebhookEndpoint]:
        names = [endpoint.key for endpoint in value]
        if len(set(names)) != len(names):
            raise ValueError("two webhook endpoints have the same name (or URL)")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _metrics_port_apart(self) -> Settings:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError("PARLEY_METRICS_PORT must differ from PARLEY_PORT")
        return self

    @model_validator(mode="after")
    def _resolve_provider(self) -> Settings:
        if self.llm_provider is None:
            self.llm_provider = (
                LLMProviderName.GROQ if self.groq_api_key else LLMProviderName.SIMULATED
            )
        if self.llm_provider is LLMProviderName.GROQ and self.groq_api_key is None:
            raise ValueError("PARLEY_LLM_PROVIDER=groq needs GROQ_API_KEY")
        return self

    @property
    def provider(self) -> LLMProviderName:
        assert self.llm_provider is not None  # resolved by the validator above
        return self.llm_provider


class SettingsError(Exception):
    """Settings that cannot be used: one line per problem, naming the environment variable
    and what it allows. Never the value: several of them are secrets."""


# Variables with Parley's prefix that are not its settings: the demo client's, and the
# test and benchmark tools' own.
NOT_SETTINGS_PREFIXES = ("PARLEY_DEMO_", "PARLEY_TEST_", "PARLEY_BENCH_")


def load_settings() -> Settings:
    """Settings from the environment; an unknown ``PARLEY_*`` variable is an error (a
    mistyped ``PARLEY_API_KEY`` silently left authentication off)."""
    problems = unknown_variables(os.environ)
    try:
        settings = Settings()
    except ValidationError as invalid:
        problems += [_problem(error) for error in invalid.errors()]
    if problems:
        raise SettingsError("\n".join(problems)) from None
    return settings


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = sorted(_known_variables())
    problems = []
    for name in sorted(variable.upper() for variable in environ):
        if (
            not name.startswith("PARLEY_")
            or name in known
            or name.startswith(NOT_SETTINGS_PREFIXES)
        ):
            continue
        closest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {closest[0]}? " if closest else ""
        problems.append(f"{name}: not a Parley setting; {hint}(`parley serve --help` lists them)")
    return problems


def _known_variables() -> set[str]:
    known = set()
    for name, info in Settings.model_fields.items():
        known.add(environment_variable(name))
        if isinstance(info.validation_alias, AliasChoices):
            known.update(str(choice) for choice in info.validation_alias.choices)
    return known


def _problem(error: Any) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    variable = environment_variable(field) if field else "settings"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{variable}: {message}"


def environment_variable(field: str) -> str:
    """The environment variable a Settings field is read from."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"PARLEY_{field.upper()}"
