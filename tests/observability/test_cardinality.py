"""No label can grow from outside: random paths, methods, ids and bodies leave series bounded."""

from __future__ import annotations

import random
import string
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from parley.api.errors import _HTTP_TYPES
from parley.domain import errors as domain
from parley.domain.models import EscalationReason
from parley.llm import LLMErrorKind
from parley.llm.prices import PRICES
from parley.observability import OTHER, UNMATCHED
from parley.observability.catalogue import (
    CONVERSATION_DURATION_BUCKETS,
    CONVERSATION_TURN_BUCKETS,
    DELETION_REASONS,
    ENDED_ESCALATED,
    EVALUATION_LABELS,
    FAST_BUCKETS,
    GENAI_DURATION_BUCKETS,
    GENAI_TOKEN_BUCKETS,
    GENAI_TOKEN_TYPES,
    HANDOFF_BUCKETS,
    HANDOFF_QUEUE_STATES,
    HANDOFF_RESOLUTIONS,
    HTTP_DURATION_BUCKETS,
    JUDGE_DURATION_BUCKETS,
    LIVE_STREAMS,
    LLM_LATENCY_BUCKETS,
    LLM_OPERATIONS,
    LLM_PROVIDERS,
    LLM_STATUSES,
    LLM_TPOT_BUCKETS,
    LLM_TTFT_BUCKETS,
    OUTCOME_SOURCES,
    OUTCOMES,
    STREAM_MODES,
    TOKEN_TYPES,
    TURN_CHANNELS,
    TURN_DURATION_BUCKETS,
    TURN_OUTCOMES,
    TURN_OVERHEAD_BUCKETS,
    TURN_TTFT_BUCKETS,
    WEBHOOK_BUCKETS,
    WEBHOOK_OUTCOMES,
    WS_DIRECTIONS,
)
from parley.observability.middleware import KNOWN_METHODS
from parley.observability.routes import walk_templates
from parley.observability.sqlalchemy import OPERATIONS
from parley.webhooks import WEBHOOK_TYPES
from tests.conftest import app_client, make_settings

GOAL_CAP = 5


def _all_subclasses(cls: type[domain.DomainError]) -> set[type[domain.DomainError]]:
    found: set[type[domain.DomainError]] = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _all_subclasses(sub)
    return found


def _random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "-_.~%") for _ in range(size))


def _storm(client: TestClient, rng: random.Random, rounds: int, conversation: str) -> None:
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    for i in range(rounds):
        choice = i % 8
        if choice == 0:
            client.get("/" + "/".join(_random_text(rng, 6) for _ in range(rng.randint(1, 4))))
        elif choice == 1:
            client.request(_random_text(rng, 7).upper().replace("%", "X"), "/v1/goals/")
        elif choice == 2:
            client.request(rng.choice(methods), f"/v1/goals/{_random_text(rng, 10)}", json={})
        elif choice == 3:
            client.get(f"/v1/conversations/{uuid.uuid4()}")
        elif choice == 4:
            client.post(
                f"/v1/conversations/{_random_text(rng, 12)}/messages", json={"content": "x"}
            )
        elif choice == 5:
            goal_id = f"goal-{uuid.uuid4().hex[:12]}"
            client.post("/v1/goals/", json={"id": goal_id, "name": "G", "instructions": "Help."})
            client.post("/v1/conversations/", json={"goal_id": goal_id, "metadata": {"k": i}})
        elif choice == 6:
            client.post(
                f"/v1/conversations/{conversation}/messages",
                content=_random_text(rng, 30).encode(),
                headers={"content-type": rng.choice(["application/json", "text/plain"])},
            )
        else:
            client.get("/v1/conversations/", params={"cursor": _random_text(rng, 20)})


def _series_count(registry: CollectorRegistry) -> int:
    return sum(len(metric.samples) for metric in registry.collect())


def _label_values(registry: CollectorRegistry) -> dict[str, set[str]]:
    values: dict[str, set[str]] = defaultdict(set)
    for metric in registry.collect():
        for sample in metric.samples:
            for name, label_value in sample.labels.items():
                values[name].add(label_value)
    return values


def _buckets(*sets: tuple[float, ...]) -> set[str]:
    return {str(float(b)) for s in sets for b in s} | {"+Inf"}


def _bounds(app_routes: list[object]) -> dict[str, Callable[[str], bool]]:
    templates = {t for _, t in walk_templates(app_routes)} | {UNMATCHED, "/metrics"}  # type: ignore[arg-type]
    error_codes = (
        {cls.code for cls in _all_subclasses(domain.DomainError)}
        | {f"llm_{kind.value}" for kind in LLMErrorKind}
        | set(_HTTP_TYPES.values())
        | {
            "route_not_found",
            "invalid_request",
            "internal_error",
            "unhandled_exception",
            "body_too_large",
            "database_unreachable",
        }
    )
    error_types = set(_HTTP_TYPES.values()) | {
        "not_found",
        "conflict",
        "validation_error",
        "payload_too_large",
        "upstream_error",
        "internal_error",
        "unavailable",
        "bad_request",
        "http_error",
    }
    models = {"llama-3.1-8b-instant", *PRICES, OTHER}
    return {
        "path": templates.__contains__,
        "method": (KNOWN_METHODS | {"other"}).__contains__,
        "status": lambda v: (v in LLM_STATUSES) or (v.isdigit() and 100 <= int(v) <= 599),
        # "": a GenAI operation without an error.
        "error_type": lambda v: v in error_types or v in {"", *(k.value for k in LLMErrorKind)},
        "gen_ai_operation_name": {"chat"}.__contains__,
        "gen_ai_provider_name": {*LLM_PROVIDERS, "other"}.__contains__,
        "gen_ai_request_model": models.__contains__,
        "gen_ai_response_model": models.__contains__,
        "gen_ai_token_type": set(GENAI_TOKEN_TYPES).__contains__,
        "error_code": lambda v: v in error_codes or (v.isdigit() and 100 <= int(v) <= 599),
        "model": models.__contains__,
        "stream_mode": set(STREAM_MODES).__contains__,
        "type": set(TOKEN_TYPES).__contains__,
        "direction": set(WS_DIRECTIONS).__contains__,
        "channel": set(TURN_CHANNELS).__contains__,
        "outcome": (set(TURN_OUTCOMES) | set(WEBHOOK_OUTCOMES) | set(OUTCOMES)).__contains__,
        "source": set(OUTCOME_SOURCES).__contains__,
        "reason": ({r.value for r in EscalationReason} | set(DELETION_REASONS)).__contains__,
        "kind": set(domain.DATABASE_ERROR_KINDS).__contains__,
        # The database statement kinds; the LLM calls' (chat, judge).
        "operation": (set(OPERATIONS) | set(LLM_OPERATIONS)).__contains__,
        "metric": {"conversations_created_total", "llm_cost_usd_total"}.__contains__,
        # The label guard's label names; the judge's verdicts.
        "label": ({"goal_id", "key_name"} | set(EVALUATION_LABELS)).__contains__,
        # Admin-made key names, capped (this traffic has no key: development mode, "").
        "key_name": {"", OTHER}.__contains__,
        "state": set(HANDOFF_QUEUE_STATES).__contains__,
        "resolution": set(HANDOFF_RESOLUTIONS).__contains__,
        "stream": set(LIVE_STREAMS).__contains__,
        "escalated": set(ENDED_ESCALATED).__contains__,
        "event": set(WEBHOOK_TYPES).__contains__,
        "goal_id": lambda v: v == OTHER or v == "base" or v.startswith("goal-"),
        "le": _buckets(
            HTTP_DURATION_BUCKETS,
            LLM_LATENCY_BUCKETS,
            LLM_TTFT_BUCKETS,
            LLM_TPOT_BUCKETS,
            FAST_BUCKETS,
            TURN_TTFT_BUCKETS,
            TURN_DURATION_BUCKETS,
            TURN_OVERHEAD_BUCKETS,
            HANDOFF_BUCKETS,
            WEBHOOK_BUCKETS,
            CONVERSATION_TURN_BUCKETS,
            CONVERSATION_DURATION_BUCKETS,
            JUDGE_DURATION_BUCKETS,
            GENAI_DURATION_BUCKETS,
            GENAI_TOKEN_BUCKETS,
        ).__contains__,
        # The platform and GC collectors: fixed facts about this interpreter.
        "generation": {"0", "1", "2"}.__contains__,
        "implementation": lambda v: True,
        "major": str.isdigit,
        "minor": str.isdigit,
        "patchlevel": str.isdigit,
        "version": lambda v: True,
    }


@pytest.mark.slow
def test_random_traffic_leaves_every_label_bounded(tmp_path: Path) -> None:
    """Every label of every metric stays within a value set fixed by the code."""
    rng = random.Random(20261127)
    settings = make_settings(tmp_path, metrics_goal_label_limit=GOAL_CAP)
    with app_client(settings) as client:
        registry = client.app.state.instrumentation.registry  # type: ignore[attr-defined]
        client.post("/v1/goals/", json={"id": "base", "name": "B", "instructions": "Help."})
        conversation = client.post("/v1/conversations/", json={"goal_id": "base"}).json()["id"]
        _storm(client, rng, 400, conversation)
        after_warmup = _series_count(registry)
        _storm(client, rng, 1600, conversation)
        after_storm = _series_count(registry)
        bounds = _bounds(list(client.app.routes))  # type: ignore[attr-defined]
        values = _label_values(registry)

    # Four times the traffic, and not a single new series.
    assert after_storm == after_warmup
    unknown = set(values) - set(bounds)
    assert not unknown, f"labels without a declared bound: {unknown}"
    for label, seen in values.items():
        outside = {v for v in seen if not bounds[label](v)}
        assert not outside, f"{label} took values outside its bound: {sorted(outside)[:10]}"
    goal_ids = values["goal_id"]
    assert len(goal_ids) <= GOAL_CAP + 1
    assert OTHER in goal_ids
