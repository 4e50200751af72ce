"""Medians, spreads and paired overheads over interleaved rounds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> tuple[float, float]:
    """The interquartile range (or min/max when there are too few rounds)."""
    if len(values) < 4:
        return min(values), max(values)
    quartiles = statistics.quantiles(values, n=4)
    return quartiles[0], quartiles[2]


def paired_overheads(variant: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Per round: variant minus baseline, measured back to back in that round."""
    return [v - b for v, b in zip(variant, baseline, strict=True)]


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values (nearest rank)."""
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]
