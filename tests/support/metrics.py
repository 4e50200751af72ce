"""Helpers for reading metrics in tests, in prometheus_client's own style."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry


@dataclass
class FakeClock:
    """A monotonic clock that moves only when a test moves it."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """A sample's value; None when the series does not exist (as ``get_sample_value``), so
    a test can tell a missing series from one at 0."""
    return registry.get_sample_value(name, labels)


def series(registry: CollectorRegistry, family: str) -> list[dict[str, str]]:
    """The label sets of every sample of a metric family."""
    for metric in registry.collect():
        if metric.name == family:
            return [dict(sample.labels) for sample in metric.samples]
    return []


def total(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample summed over every series that carries ``labels`` (0 when none does)."""
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def registry_of(client: Any) -> CollectorRegistry:
    """The registry of the app a ``TestClient`` drives."""
    registry: CollectorRegistry = client.app.state.instrumentation.registry
    return registry
