"""Generated requests against the OpenAPI spec, on SQLite and PostgreSQL: no server
error, every error in the one shape, responses as the spec says.

Schema-valid data may still be refused: the input bounds (no NUL or lone surrogate,
metadata depth and size; parley.domain.bounds) are more than JSON Schema can say, so
schemathesis' positive-data-acceptance check is left out; every other check runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from parley.api.openapi import LIVE_PATHS
from parley.app import create_app
from tests.conftest import make_settings
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 25
KEY = "schemathesis-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_generated_requests_get_no_server_error_and_answers_as_specified(
    tmp_path: Path, database_url: str
) -> None:
    settings_ = make_settings(
        tmp_path, database_url=database_url, api_keys=KEY, auth_failures_per_minute=0
    )
    with LiveServer(create_app(settings_)) as live:
        schema = schemathesis.openapi.from_url(f"{live.http_url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(operations) >= 12
        for operation in operations:
            if operation.path in LIVE_PATHS:
                continue  # endless by design; their inputs: tests/integration/test_live_events
            _exercise(operation, live.http_url)


def _exercise(operation: Any, base_url: str) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call_and_validate(
            base_url=base_url, headers=AUTH, excluded_checks=[positive_data_acceptance]
        )
        if response.status_code >= 400:
            assert set(response.json()["error"]) >= {"type", "code", "message"}

    check()
