"""docs/metrics.md cannot drift from the catalogue."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from parley.observability.docs import catalogue_rows, render
from tests.api.helpers import make_conversation, make_goal

DOC = Path(__file__).parents[2] / "docs" / "metrics.md"


def test_docs_show_the_catalogue_as_the_code_defines_it() -> None:
    """Run `make docs` when this fails."""
    assert render() in DOC.read_text()


def test_every_exposed_metric_is_in_the_catalogue(client: TestClient) -> None:
    """Nothing on /metrics (beyond the standard collectors) escapes the catalogue."""
    make_goal(client)
    make_conversation(client)
    families = {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}
    standard = {f for f in families if f.startswith(("process_", "python_"))}
    documented = {name.removesuffix("_total") for _, name, *_ in catalogue_rows()}
    assert families - standard == documented
