"""Every threshold, window and SLO target of the rules and dashboards, in one place."""

from __future__ import annotations

from dataclasses import dataclass

JOB = "parley"
# Where the runbook is published: alerts link to a section of it (an absolute URL, so the
# link works from a pager or a chat message). Point it at your copy and run `make docs`.
RUNBOOK_URL = "https://github.com/parley-dev/parley/blob/main/docs/runbook.md"
# Rules aggregate by these labels: Prometheus' external labels (cluster, env) and the
# Kubernetes namespace keep replicas of different clusters and environments apart on a
# global view (Thanos, Mimir, VictoriaMetrics). A label a setup lacks is empty: one group.
AGGREGATION_LABELS = ("cluster", "env", "namespace", "job")

# Guideline alerts, corrected. HighErrorRate counts server errors and failed turns, not
# every 4xx (a client's flood of 4xx is ClientErrorFlood, a ticket), and needs traffic.
ERROR_RATIO_THRESHOLD = 0.05
MIN_REQUESTS_PER_SECOND = 0.1  # below this a handful of failures says little (at night)
CLIENT_ERROR_RATIO_THRESHOLD = 0.25
LATENCY_P95_THRESHOLD_SECONDS = 2.0
# The route that answers turns: its duration is the LLM's (a stream lasts as long as the
# reply), so HighLatency leaves it to the turn alerts (time to first token, duration).
MESSAGES_PATH = "/v1/conversations/{conversation_id}/messages"
TURN_TTFT_P95_THRESHOLD_SECONDS = 2.0
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


# The SLOs count turns (one user message and its reply), on every channel: a streamed
# turn that fails in-band is an HTTP 200, and a WebSocket turn is no HTTP request.
AVAILABILITY = SLO(
    "availability",
    0.995,
    "turns that do not fail (failed: the LLM failed, the server cut the turn, a bug crashed "
    "it or the database failed under it; turns refused as the client's error or left by the "
    "client do not count)",
)
# Thresholds must be bucket bounds of conversation_turn_ttft_seconds and
# conversation_turn_duration_seconds.
TURN_TTFT_THRESHOLD_SECONDS = 2.0
TURN_DURATION_THRESHOLD_SECONDS = 10.0
LATENCY = SLO(
    "latency",
    0.99,
    "streamed turns whose first token is sent within 2 s, and whole turns answered within 10 s",
)
# Below this many turns a second a few bad ones say little: no burn-rate alert.
MIN_TURNS_PER_SECOND = 0.01
SLO_PERIOD = "30d"

# Multi-window, multi-burn-rate alerts (Google SRE workbook, ch. 5), for a 30-day budget:
# (severity, long window, short window, burn rate).
BURN_RATE_ALERTS = (
    ("critical", "1h", "5m", 14.4),
    ("critical", "6h", "30m", 6.0),
    ("warning", "1d", "2h", 3.0),
    ("warning", "3d", "6h", 1.0),
)
SLI_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d", SLO_PERIOD)
