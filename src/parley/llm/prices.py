"""Prices per million tokens, for the estimated-cost metric. The one place to update them.

Figures are Groq's published on-demand prices in US dollars when this table was last
checked; treat the resulting cost as an estimate, not an invoice.

Cached prompt tokens: Groq's prompt caching bills the part of a prompt served from its
cache at a 50 % discount, on the models that support it (openai/gpt-oss-20b and
openai/gpt-oss-120b among those priced here), and reports that part as
``usage.prompt_tokens_details.cached_tokens`` (https://console.groq.com/docs/prompt-caching).
A model with no cached price bills every prompt token at its input price.
"""

from __future__ import annotations

from dataclasses import dataclass

from parley.llm.types import Usage


@dataclass(frozen=True, slots=True)
class Price:
    input_per_million: float
    output_per_million: float
    cached_input_per_million: float | None = None  # None: no prompt caching


PRICES: dict[str, Price] = {
    "llama-3.1-8b-instant": Price(0.05, 0.08),
    "llama-3.3-70b-versatile": Price(0.59, 0.79),
    "meta-llama/llama-4-scout-17b-16e-instruct": Price(0.11, 0.34),
    "meta-llama/llama-4-maverick-17b-128e-instruct": Price(0.20, 0.60),
    "openai/gpt-oss-20b": Price(0.075, 0.30, cached_input_per_million=0.0375),
    "openai/gpt-oss-120b": Price(0.15, 0.60, cached_input_per_million=0.075),
    "qwen/qwen3-32b": Price(0.29, 0.59),
}


# Providers whose calls nobody pays for: the simulated provider answers as a Groq model
# would, and its traffic priced at Groq's rates showed a bill for nothing.
FREE_PROVIDERS = frozenset({"simulated"})


def estimate_cost(model: str, usage: Usage | None, provider: str = "groq") -> float | None:
    """Dollars for ``usage`` on ``model``; ``None`` when either is unknown, and for a
    provider nobody pays."""
    price = PRICES.get(model)
    if price is None or usage is None or provider in FREE_PROVIDERS:
        return None
    cached = usage.cached_prompt_tokens if price.cached_input_per_million is not None else 0
    return (
        (usage.prompt_tokens - cached) * price.input_per_million
        + cached * (price.cached_input_per_million or 0.0)
        + usage.completion_tokens * price.output_per_million
    ) / 1_000_000
