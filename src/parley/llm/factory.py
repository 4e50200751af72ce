"""Build the configured provider and gateway from settings."""

from __future__ import annotations

from parley.config import LLMProviderName, Settings
from parley.llm.gateway import LLMGateway, RetryPolicy
from parley.llm.provider import LLMProvider
from parley.llm.simulated import RateWindow, SimulatedProvider, SimulatedTiming


def build_provider(settings: Settings) -> LLMProvider:
    if settings.provider is LLMProviderName.GROQ:
        from parley.llm.groq import GroqProvider  # imported only when used

        assert settings.groq_api_key is not None  # enforced by Settings
        return GroqProvider(
            api_key=settings.groq_api_key.get_secret_value(),
            base_url=settings.groq_base_url,
            timeout_seconds=settings.llm_timeout_seconds,
            max_connections=settings.llm_max_connections,
        )
    return SimulatedProvider(
        timing=SimulatedTiming(settings.sim_ttft_seconds, settings.sim_token_delay_seconds),
        failure_rate=settings.sim_failure_rate,
        seed=settings.sim_seed,
        rate_window=RateWindow(settings.sim_requests_per_minute, settings.sim_tokens_per_minute),
    )


def build_gateway(settings: Settings, provider: LLMProvider | None = None) -> LLMGateway:
    return LLMGateway(
        provider or build_provider(settings),
        timeout_seconds=settings.llm_timeout_seconds,
        retry=RetryPolicy(
            max_retries=settings.llm_max_retries,
            backoff_seconds=settings.llm_retry_backoff_seconds,
            max_wait_seconds=settings.llm_retry_max_wait_seconds,
        ),
    )
