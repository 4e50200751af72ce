"""Every threshold, window and SLO target of the rules and dashboards, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

JOB = "parley"
# Where the runbook is published: alerts link to a section of it (an absolute URL, so the
# link works from a pager or a chat message). By default, the copy the dashboard's
# server ships (deploy/dashboard/runbook.html, generated from docs/runbook.md) where
# `make stack` serves it; for your own alerts: `make docs RUNBOOK_URL=https://...`.
DEFAULT_RUNBOOK_URL = "http://127.0.0.1:9096/runbook.html"
RUNBOOK_URL = os.environ.get("RUNBOOK_URL") or DEFAULT_RUNBOOK_URL
# Rules aggregate by these labels: Prometheus' external labels (cluster, env) and the
# Kubernetes namespace keep replicas of different clusters and environments apart on a
# global view (Thanos, Mimir, VictoriaMetrics). A label a setup lacks is empty: one group.
AGGREGATION_LABELS = ("cluster", "env", "namespace", "job")

# The platform's own requests: probes and scrapes. They are not the API's traffic: alone
# they met every minimum-traffic guard, and they diluted every error ratio.
PLATFORM_PATHS = "/healthz|/readyz|/metrics"

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
# A hung provider: calls in flight and none ending (cancelled ones aside) for this long,
# then `for` 5m more: it pages about 10 minutes in.
LLM_HANG_WINDOW = "5m"

# What an on-call engineer of an LLM service needs beyond them.
LLM_ERROR_RATIO_THRESHOLD = 0.10
LLM_RATE_LIMITED_RATIO_THRESHOLD = 0.05
TTFT_P95_THRESHOLD_SECONDS = 2.0
ESCALATION_SPIKE_FACTOR = 3.0
ESCALATION_SPIKE_MIN_COUNT = 5
# A customer waiting this long for a human agent pages (HandoffQueueStalled).
HANDOFF_STALLED_SECONDS = 600
# An API key past this share of its budget raises a ticket (ApiKeyBudgetNearlySpent).
KEY_BUDGET_WARNING_SHARE = 0.9
# The spike is measured against the rate of this long before it; series younger than
# that have no baseline yet, and no spike.
ESCALATION_BASELINE = "6h"


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
# The API's availability, every route but the probes and scrapes: a server error before a
# turn starts (the database failing on the messages route) or on any other route pages.
API_AVAILABILITY = SLO(
    "api",
    0.995,
    "API requests (every route but probes and scrapes, turns included) answered without a "
    "server error (5xx); the client's errors (4xx) and requests the client left (499) do "
    "not count",
)
# Below this many events a second a few bad ones say little (a blip at night): no
# burn-rate alert. The same bar as HighErrorRate's.
MIN_EVENTS_PER_SECOND = 0.1
SLO_PERIOD = "30d"

# Multi-window, multi-burn-rate alerts (Google SRE workbook, ch. 5), for a 30-day budget:
# (severity, long window, short window, burn rate). The workbook's windows are too slow
# here: its 1h page took 43-53 minutes to page 10% errors (a 20x burn of 99.5%), and its
# 3-day ticket needed ~29 hours of a 1% error rate once Prometheus had days of history.
# A 15m window pages 10% errors in ~11 minutes and a total outage in ~3; 6h at 1x tickets
# a 1% error rate (2x) in about 3 hours.
BURN_RATE_ALERTS = (
    ("critical", "15m", "5m", 14.4),
    ("critical", "6h", "30m", 6.0),
    ("warning", "6h", "30m", 1.0),
)
SLI_WINDOWS = ("5m", "15m", "30m", "6h", SLO_PERIOD)

# The human handoff's service level, as contact centres state it: 80 % of handoffs picked
# up by an agent within 60 s. A handoff whose customer left while it waited was not picked
# up (it counts against the level). The target must be a bucket bound of
# handoff_wait_seconds.
HANDOFF_PICKUP_TARGET_SECONDS = 60
HANDOFF_PICKUP = SLO(
    "handoff_pickup",
    0.80,
    f"handoffs picked up by an agent within {HANDOFF_PICKUP_TARGET_SECONDS} s (abandoned "
    "ones count as not picked up)",
)
# With a 20 % budget a burn rate above 5 cannot happen, and the turn SLOs' fast windows
# see a handful of handoffs: an hour's window pages 60 % of them late (3x), six hours'
# tickets 30 % late (1.5x). Fewer than this many handoffs in the long window say little.
HANDOFF_BURN_RATE_ALERTS = (
    ("critical", "1h", "5m", 3.0),
    ("warning", "6h", "30m", 1.5),
)
HANDOFF_MIN_COUNT = 5
HANDOFF_SLI_WINDOWS = ("5m", "30m", "1h", "6h", SLO_PERIOD)
# Containment and abandonment are read over this window.
HANDOFF_RATIO_WINDOW = "1h"

# Goal outcomes: each goal's SLO, as someone accountable for it states it: 80 % of its
# conversations with a verdict (reported by the client or an agent, or the judge's)
# achieved it. Goals differ and verdicts are few, so only slow burns alert, as tickets
# (6 hours at twice the budget's rate, 3 days at its rate), and only with at least
# GOAL_MIN_VERDICTS verdicts in the long window.
GOAL_SUCCESS = SLO(
    "goal_success",
    0.80,
    "conversations that achieved their goal, of those with a verdict (reported or judged)",
)
GOAL_BURN_RATE_ALERTS = (
    ("warning", "6h", "30m", 2.0),
    ("warning", "3d", "6h", 1.0),
)
GOAL_MIN_VERDICTS = 10
GOAL_SLI_WINDOWS = ("30m", "1h", "6h", "3d", "7d", SLO_PERIOD)
# GoalSuccessRateDropped: the success ratio over the short window below this share of the
# ratio over the long one (the goal's own normal), with at least GOAL_MIN_VERDICTS.
GOAL_DROP_WINDOW = "6h"
GOAL_BASELINE_WINDOW = "7d"
GOAL_DROP_FACTOR = 0.8

# Webhooks: a delivery pending this long (its receiver failing, or no replica delivering)
# raises a ticket (WebhookDeliveryFailing), as does any delivery given up on.
WEBHOOK_STALE_SECONDS = 900
