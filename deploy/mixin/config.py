"""Every threshold, window and SLO target of the rules and dashboards, in one place."""

from __future__ import annotations

from dataclasses import dataclass

JOB = "parley"
RUNBOOK = "docs/runbook.md"

# The conversation API: what the SLOs are about (the WebSocket is not an HTTP request).
CONVERSATION_API = "/v1/conversations.*"

# Guideline alerts, corrected. HighErrorRate counts server errors and failed turns, not
# every 4xx (a client's flood of 4xx is ClientErrorFlood, a ticket), and needs traffic.
ERROR_RATIO_THRESHOLD = 0.05
MIN_REQUESTS_PER_SECOND = 0.1  # below this a handful of failures says little (at night)
CLIENT_ERROR_RATIO_THRESHOLD = 0.25
LATENCY_P95_THRESHOLD_SECONDS = 2.0
LLM_DOWN_ERROR_RATIO = 0.9
# A hung provider: calls in flight and none ending for this long (then `for` 5m more).
LLM_HANG_WINDOW = "10m"

# What an on-call engineer of an LLM service needs beyond them.
LLM_ERROR_RATIO_THRESHOLD = 0.10
LLM_RATE_LIMITED_RATIO_THRESHOLD = 0.05
TTFT_P95_THRESHOLD_SECONDS = 2.0
ESCALATION_SPIKE_FACTOR = 3.0
ESCALATION_SPIKE_MIN_COUNT = 5


@dataclass(frozen=True)
class SLO:
    name: str
    objective: float  # e.g. 0.995 = 99.5% of requests are good over the SLO period
    description: str

    @property
    def error_budget(self) -> float:
        return round(1 - self.objective, 6)


AVAILABILITY = SLO("availability", 0.995, "conversation API requests that do not fail with 5xx")
# The threshold must be a bucket bound of http_request_duration_seconds.
LATENCY_THRESHOLD_SECONDS = 5.0
LATENCY = SLO("latency", 0.99, "conversation API requests answered within 5 s")

# Multi-window, multi-burn-rate alerts (Google SRE workbook, ch. 5), for a 30-day budget:
# (severity, long window, short window, burn rate).
BURN_RATE_ALERTS = (
    ("critical", "1h", "5m", 14.4),
    ("critical", "6h", "30m", 6.0),
    ("warning", "1d", "2h", 3.0),
    ("warning", "3d", "6h", 1.0),
)
SLI_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
