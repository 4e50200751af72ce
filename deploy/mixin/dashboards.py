"""Grafana dashboards for Parley, built with grafana-foundation-sdk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
)

from mixin import config as c

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Which Parley: the cluster, environment and job picked in the dashboard's variables
# (recording rules are per job, so only these apply to them), then the instances.
SCOPE = 'cluster=~"$cluster", env=~"$env", job=~"$job"'
SEL = f'{SCOPE}, instance=~"$instance"'
LLM_SEL = f'{SEL}, model=~"$model"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str
    kind: str = "timeseries"  # or "stat"
    width: int = 12
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "green"),)
    decimals: int | None = None  # 0 for counts: no "2.50 connections"


@dataclass(frozen=True)
class RowSpec:
    title: str
    panels: tuple[PanelSpec, ...] = field(default_factory=tuple)


def _q(expr: str, legend: str = "") -> Query:
    return Query(expr, legend)


def _quantiles(metric: str, selector: str, by: str = "") -> tuple[Query, ...]:
    group = f"{by}, le" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return tuple(
        _q(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"p{int(q * 100)}{suffix}",
        )
        for q in (0.5, 0.95, 0.99)
    )


SLO_COLORS = ((None, "red"), (0.25, "orange"), (0.5, "green"))
# The fastest page's windows and burn rate.
_, PAGE_LONG, PAGE_SHORT, PAGE_RATE = c.BURN_RATE_ALERTS[0]


def _slo_stats(slo: c.SLO, sli: str, title: str, legend: str) -> tuple[PanelSpec, ...]:
    """The SLI over the SLO period, and the share of its error budget left."""
    return (
        PanelSpec(
            f"{title}, 30 days (SLO {slo.objective:.1%})",
            f"{slo.description[0].upper()}{slo.description[1:]}; from the recording rules "
            "(whole job).",
            (_q(f"1 - job:slo_{sli}:ratio_rate{c.SLO_PERIOD}{{{SCOPE}}}", legend),),
            "percentunit",
            kind="stat",
            width=6,
            thresholds=((None, "red"), (slo.objective, "green")),
        ),
        PanelSpec(
            f"Error budget left: {slo.name}",
            f"Share of the 30-day {slo.name} budget not yet spent.",
            (_q(f'job:slo_error_budget_remaining:ratio{{{SCOPE}, slo="{slo.name}"}}', "left"),),
            "percentunit",
            kind="stat",
            width=6,
            thresholds=SLO_COLORS,
        ),
    )


ROWS: tuple[RowSpec, ...] = (
    RowSpec(
        "Turns and SLOs",
        (
            *_slo_stats(c.AVAILABILITY, "availability_errors", "Turn availability", "availability"),
            *_slo_stats(c.LATENCY, "latency_slow", "Turn latency", "within target"),
            *_slo_stats(c.API_AVAILABILITY, "api_errors", "API availability", "availability"),
            PanelSpec(
                "Turns by channel and outcome",
                "Turns per second: ok, escalated, llm_error, rejected, cancelled, interrupted, crashed, db_error.",
                (
                    _q(
                        f"sum by (channel, outcome) (rate(conversation_turns_total{{{SEL}}}[{RATE}]))",
                        "{{channel}} {{outcome}}",
                    ),
                ),
                "reqps",
            ),
            PanelSpec(
                f"Burn rate, availability ({PAGE_LONG} and {PAGE_SHORT} windows)",
                "How fast the budget burns: 1 spends it in exactly 30 days; the page is at "
                f"{PAGE_RATE:g}.",
                tuple(
                    _q(
                        f"job:slo_availability_errors:ratio_rate{window}{{{SCOPE}}}"
                        f' / scalar(slo:error_budget:ratio{{slo="availability"}})',
                        window,
                    )
                    for window in (PAGE_LONG, PAGE_SHORT)
                ),
                "short",
                thresholds=((None, "green"), (6.0, "orange"), (PAGE_RATE, "red")),
            ),
            PanelSpec(
                "Time to first token by channel (p95)",
                "From the user message accepted to the first token sent, streamed turns.",
                (
                    _q(
                        f"histogram_quantile(0.95, sum by (channel, le) (rate(conversation_turn_ttft_seconds_bucket{{{SEL}}}[{RATE}])))",
                        "{{channel}}",
                    ),
                ),
                "s",
                thresholds=((None, "green"), (c.TURN_TTFT_P95_THRESHOLD_SECONDS, "red")),
            ),
            PanelSpec(
                "Turn duration by channel (p95)",
                "From the user message accepted to the last event sent.",
                (
                    _q(
                        f"histogram_quantile(0.95, sum by (channel, le) (rate(conversation_turn_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                        "{{channel}}",
                    ),
                ),
                "s",
                thresholds=((None, "green"), (c.TURN_DURATION_THRESHOLD_SECONDS, "red")),
            ),
        ),
    ),
    RowSpec(
        "Requests",
        (
            PanelSpec(
                "Request rate by route",
                "HTTP requests per second, by route template (recording rule, whole job).",
                (_q(f"sum by (path) (job_path:http_requests:rate5m{{{SCOPE}}})", "{{path}}"),),
                "reqps",
            ),
            PanelSpec(
                "Latency (p50, p95, p99)",
                "Time to the last byte of the response, all routes.",
                _quantiles("http_request_duration_seconds", SEL),
                "s",
                thresholds=((None, "green"), (c.LATENCY_P95_THRESHOLD_SECONDS, "red")),
            ),
            PanelSpec(
                "Error ratio",
                "Share of requests answered with an error.",
                (
                    _q(
                        # "or 0 *": no error series yet is 0 %, not "no data".
                        f"(sum(rate(api_errors_total{{{SEL}}}[{RATE}]))"
                        f" or 0 * sum(rate(http_requests_total{{{SEL}}}[{RATE}])))"
                        f" / sum(rate(http_requests_total{{{SEL}}}[{RATE}]))",
                        "errors",
                    ),
                ),
                "percentunit",
                kind="stat",
                width=6,
                thresholds=((None, "green"), (0.01, "orange"), (c.ERROR_RATIO_THRESHOLD, "red")),
            ),
            PanelSpec(
                "Average latency",
                "Mean request duration.",
                (
                    _q(
                        f"sum(rate(http_request_duration_seconds_sum{{{SEL}}}[{RATE}]))"
                        f" / sum(rate(http_request_duration_seconds_count{{{SEL}}}[{RATE}]))",
                        "mean",
                    ),
                ),
                "s",
                kind="stat",
                width=6,
                thresholds=(
                    (None, "green"),
                    (1.0, "orange"),
                    (c.LATENCY_P95_THRESHOLD_SECONDS, "red"),
                ),
            ),
            PanelSpec(
                "Server error ratio by route",
                "Share of each route's requests answered with a 5xx (the E of RED, by route; "
                "recording rule, whole job).",
                (
                    _q(
                        f"job_path:http_server_errors:ratio_rate5m{{{SCOPE}}}",
                        "{{path}}",
                    ),
                ),
                "percentunit",
                thresholds=((None, "green"), (c.ERROR_RATIO_THRESHOLD, "red")),
            ),
            PanelSpec(
                "Latency by route (p95)",
                "The D of RED, by route (recording rule, whole job); the messages route lasts "
                "as long as its replies.",
                (
                    _q(
                        f"job_path:http_request_duration_seconds:p95_rate5m{{{SCOPE}}}",
                        "{{path}}",
                    ),
                ),
                "s",
                thresholds=((None, "green"), (c.LATENCY_P95_THRESHOLD_SECONDS, "red")),
            ),
            PanelSpec(
                "Errors by type",
                "Error responses per second, by error type and code.",
                (
                    _q(
                        f"sum by (error_type, error_code) (rate(api_errors_total{{{SEL}}}[{RATE}]))",
                        "{{error_type}} / {{error_code}}",
                    ),
                ),
                "reqps",
            ),
        ),
    ),
    RowSpec(
        "LLM",
        (
            PanelSpec(
                "LLM latency by model (p50, p95, p99)",
                "Whole calls, retries included; streams to their last chunk.",
                _quantiles("llm_latency_seconds", LLM_SEL, "model"),
                "s",
            ),
            PanelSpec(
                "Time to first token by model (p50, p95, p99)",
                "From the call to the first chunk that carries content.",
                _quantiles("llm_ttft_seconds", LLM_SEL, "model"),
                "s",
                thresholds=((None, "green"), (c.TTFT_P95_THRESHOLD_SECONDS, "red")),
            ),
            PanelSpec(
                "Output tokens per second",
                "Completion tokens per second, by model.",
                (
                    _q(
                        f'sum by (model) (rate(llm_tokens_used_total{{{LLM_SEL}, type="completion"}}[{RATE}]))',
                        "{{model}}",
                    ),
                ),
                "suffix: tokens/s",
            ),
            PanelSpec(
                "LLM errors by type",
                "Failed calls per second (after retries), and retries, by error type.",
                (
                    _q(
                        f"sum by (error_type) (rate(llm_errors_total{{{LLM_SEL}}}[{RATE}]))",
                        "failed: {{error_type}}",
                    ),
                    _q(
                        f"sum by (error_type) (rate(llm_retries_total{{{LLM_SEL}}}[{RATE}]))",
                        "retried: {{error_type}}",
                    ),
                ),
                "reqps",
            ),
            PanelSpec(
                "LLM calls by outcome",
                "Calls per second by model, stream mode and outcome.",
                (
                    _q(
                        f"sum by (model, stream_mode, status) (rate(llm_requests_total{{{LLM_SEL}}}[{RATE}]))",
                        "{{model}} {{stream_mode}} {{status}}",
                    ),
                ),
                "reqps",
            ),
            PanelSpec(
                "Time per output token (p95)",
                "Mean gap between output tokens after the first, per stream.",
                (
                    _q(
                        f"histogram_quantile(0.95, sum by (model, le) (rate(llm_time_per_output_token_seconds_bucket{{{LLM_SEL}}}[{RATE}])))",
                        "{{model}}",
                    ),
                ),
                "s",
            ),
            # Requests and tokens apart: on one axis the tokens (millions) flattened the
            # requests (thousands) to a line at zero.
            PanelSpec(
                "Rate-limit headroom: requests",
                "Requests left in the provider's window, as last reported.",
                (
                    _q(
                        f"min by (model) (llm_rate_limit_remaining_requests{{{LLM_SEL}}})",
                        "{{model}}",
                    ),
                ),
                "suffix: requests",
                decimals=0,
            ),
            PanelSpec(
                "Rate-limit headroom: tokens",
                "Tokens left in the provider's window, as last reported.",
                (
                    _q(
                        f"min by (model) (llm_rate_limit_remaining_tokens{{{LLM_SEL}}})",
                        "{{model}}",
                    ),
                ),
                "suffix: tokens",
                decimals=0,
            ),
            PanelSpec(
                "Estimated cost per hour",
                "US dollars per hour at the current rate, from the price table (Groq's; the "
                "simulated provider costs nothing).",
                (
                    _q(
                        f"sum by (model) (rate(llm_cost_usd_total{{{LLM_SEL}}}[{RATE}])) * 3600",
                        "{{model}}",
                    ),
                ),
                "currencyUSD",
            ),
        ),
    ),
    RowSpec(
        "Live",
        (
            PanelSpec(
                "WebSocket connections",
                "Open WebSocket connections.",
                (_q(f"sum(ws_connections_active{{{SEL}}})", "open"),),
                "none",
                decimals=0,
                kind="stat",
                width=6,
            ),
            PanelSpec(
                "Active conversations",
                "Conversations in status active (from the store).",
                (_q(f"max(conversations_active{{{SEL}}})", "active"),),
                "none",
                decimals=0,
                kind="stat",
                width=6,
            ),
            PanelSpec(
                "WebSocket messages",
                "Frames per second by direction.",
                (
                    _q(
                        f"sum by (direction) (rate(ws_messages_total{{{SEL}}}[{RATE}]))",
                        "{{direction}}",
                    ),
                ),
                "suffix: frames/s",
            ),
        ),
    ),
    RowSpec(
        "Saturation",
        (
            PanelSpec(
                "In flight",
                "HTTP requests being served, and LLM calls started and not ended (calls in "
                "flight with none ending is a hang).",
                (
                    _q(f"sum(http_requests_in_flight{{{SEL}}})", "HTTP requests"),
                    _q(f"sum by (model) (llm_requests_in_flight{{{LLM_SEL}}})", "LLM {{model}}"),
                ),
                "none",
                decimals=0,
            ),
            PanelSpec(
                "Database connections in use",
                "Pooled connections checked out, per instance.",
                (_q(f"sum by (instance) (db_connections_in_use{{{SEL}}})", "{{instance}}"),),
                "none",
                decimals=0,
            ),
            PanelSpec(
                "Event-loop lag",
                "How late each process's event loop ran a timer: blocking work delays every "
                "request.",
                (_q(f"max by (instance) (event_loop_lag_seconds{{{SEL}}})", "{{instance}}"),),
                "s",
                thresholds=((None, "green"), (0.1, "orange"), (0.5, "red")),
            ),
            PanelSpec(
                "CPU per instance",
                "CPU seconds per second, per process.",
                (
                    _q(
                        f"sum by (instance) (rate(process_cpu_seconds_total{{{SEL}}}[{RATE}]))",
                        "{{instance}}",
                    ),
                ),
                "suffix: cores",
            ),
        ),
    ),
    RowSpec(
        "Business",
        (
            PanelSpec(
                "Conversations started by goal",
                "New conversations per hour, by goal ('other' past the label cap).",
                (
                    _q(
                        f"sum by (goal_id) (rate(conversations_created_total{{{SEL}}}[{RATE}])) * 3600",
                        "{{goal_id}}",
                    ),
                ),
                "suffix: /h",
            ),
            PanelSpec(
                "Escalations by reason",
                "Escalations to a human per hour, by reason.",
                (
                    _q(
                        f"sum by (reason) (rate(escalations_total{{{SEL}}}[{RATE}])) * 3600",
                        "{{reason}}",
                    ),
                ),
                "suffix: /h",
            ),
        ),
    ),
    RowSpec(
        "Human handoff",
        (
            *_slo_stats(c.HANDOFF_PICKUP, "handoff_late", "Handoffs picked up in time", "in time"),
            PanelSpec(
                "Queue by state",
                "Conversations waiting for an agent and held by one (every replica reads the "
                "same database: the highest reading per goal, summed).",
                (
                    _q(
                        f"sum by (state) (max by (goal_id, state) (handoff_queue_depth{{{SEL}}}))",
                        "{{state}}",
                    ),
                ),
                "short",
                decimals=0,
            ),
            PanelSpec(
                "Longest wait for an agent",
                f"How long the longest-waiting customer has waited (0: nobody waits); "
                f"HandoffQueueStalled pages past {c.HANDOFF_STALLED_SECONDS // 60} minutes.",
                (_q(f"max(handoff_oldest_waiting_seconds{{{SEL}}}) or vector(0)", "oldest"),),
                "s",
                thresholds=((None, "green"), (c.HANDOFF_STALLED_SECONDS, "red")),
            ),
            PanelSpec(
                "Pickup time (p50, p90)",
                "From the escalation to an agent claiming it.",
                tuple(
                    _q(
                        f"histogram_quantile({q}, sum by (le) (rate(handoff_wait_seconds_bucket{{{SEL}}}[{RATE}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.9)
                ),
                "s",
                thresholds=((None, "green"), (c.HANDOFF_PICKUP_TARGET_SECONDS, "red")),
            ),
            PanelSpec(
                "First response (p50, p90)",
                "From the escalation to the agent's first message.",
                tuple(
                    _q(
                        f"histogram_quantile({q}, sum by (le) (rate(handoff_first_response_seconds_bucket{{{SEL}}}[{RATE}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.9)
                ),
                "s",
            ),
            PanelSpec(
                f"Containment and abandonment ({c.HANDOFF_RATIO_WINDOW})",
                "Containment: conversations that ended without ever going to a human, of all "
                "that ended. Abandonment: handoffs whose customer left before an agent came.",
                (
                    _q(
                        f"job:conversation_containment:ratio_rate{c.HANDOFF_RATIO_WINDOW}{{{SCOPE}}}",
                        "containment",
                    ),
                    _q(
                        f"job:handoff_abandonment:ratio_rate{c.HANDOFF_RATIO_WINDOW}{{{SCOPE}}}",
                        "abandonment",
                    ),
                ),
                "percentunit",
            ),
            PanelSpec(
                "Webhooks",
                "Deliveries pending in the outbox and the oldest one's age (one database: "
                "the highest reading), and attempts a second by outcome.",
                (
                    _q(f"max(webhook_outbox_pending{{{SEL}}})", "pending"),
                    _q(f"max(webhook_outbox_oldest_pending_seconds{{{SEL}}})", "oldest (s)"),
                    _q(
                        f"sum by (outcome) (rate(webhook_deliveries_total{{{SEL}}}[{RATE}]))",
                        "{{outcome}} /s",
                    ),
                ),
                "short",
            ),
        ),
    ),
    RowSpec(
        "Goals",
        (
            PanelSpec(
                f"Goal success, 30 days (SLO {c.GOAL_SUCCESS.objective:.0%}, lowest goal)",
                "Achieved, of the conversations with a verdict (reported by the client or an "
                "agent, or the judge's), for the goal doing worst; from the recording rules.",
                (_q(f"min(job_goal:goal_success:ratio_rate{c.SLO_PERIOD}{{{SCOPE}}})", "success"),),
                "percentunit",
                kind="stat",
                width=6,
                thresholds=((None, "red"), (c.GOAL_SUCCESS.objective, "green")),
            ),
            PanelSpec(
                "Error budget left: goal_success (lowest goal)",
                "Share of the 30-day goal_success budget not yet spent, for the goal doing "
                "worst; GoalSuccessBudgetBurn tickets a slow burn.",
                (_q(f"min(job_goal:slo_error_budget_remaining:ratio{{{SCOPE}}})", "left"),),
                "percentunit",
                kind="stat",
                width=6,
                thresholds=SLO_COLORS,
            ),
            PanelSpec(
                "Outcomes per goal",
                "Conversations ending a second, by goal and outcome (counted once their "
                "outcome is final: after the judge's verdict when their goal judges).",
                (
                    _q(
                        f"sum by (goal_id, outcome) (rate(conversations_ended_total{{{SEL}}}[{RATE}]))",
                        "{{goal_id}} {{outcome}}",
                    ),
                ),
                "ops",
            ),
            PanelSpec(
                f"Success ratio per goal ({c.HANDOFF_RATIO_WINDOW}) vs objective",
                "Achieved, of those with a verdict, per goal; GoalSuccessRateDropped tickets a "
                f"goal whose {c.GOAL_DROP_WINDOW} ratio falls below {c.GOAL_DROP_FACTOR:.0%} of "
                f"its {c.GOAL_BASELINE_WINDOW} one.",
                (
                    _q(
                        f"job_goal:goal_success:ratio_rate{c.HANDOFF_RATIO_WINDOW}{{{SCOPE}}}",
                        "{{goal_id}}",
                    ),
                    _q('slo:objective:ratio{slo="goal_success"}', "objective"),
                ),
                "percentunit",
            ),
            PanelSpec(
                f"Containment and ends per goal ({c.HANDOFF_RATIO_WINDOW})",
                "Containment: ended without ever going to a human, of all ended, per goal; "
                "and conversations ended a second.",
                (
                    _q(
                        f"job_goal:conversation_containment:ratio_rate{c.HANDOFF_RATIO_WINDOW}{{{SCOPE}}}",
                        "{{goal_id}} contained",
                    ),
                    _q(
                        f"job_goal:conversations_ended:rate{c.HANDOFF_RATIO_WINDOW}{{{SCOPE}}}",
                        "{{goal_id}} ended /s",
                    ),
                ),
                "short",
            ),
            PanelSpec(
                "Turns to outcome (p50)",
                "The customer's messages by the end, by outcome.",
                (
                    _q(
                        f"histogram_quantile(0.5, sum by (outcome, le) (rate(conversation_ended_turns_bucket{{{SEL}}}[{RATE}])))",
                        "{{outcome}}",
                    ),
                ),
                "short",
            ),
            PanelSpec(
                "Time to outcome (p50)",
                "From a conversation's start to its end, by outcome.",
                (
                    _q(
                        f"histogram_quantile(0.5, sum by (outcome, le) (rate(conversation_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                        "{{outcome}}",
                    ),
                ),
                "s",
            ),
            PanelSpec(
                "Judge: verdicts, backlog and cost",
                "The judge's verdicts a second by label (error: given up), ended "
                "conversations waiting for it (one database: the highest reading), and what "
                "its calls cost in US dollars an hour.",
                (
                    _q(
                        f"sum by (label) (rate(goal_evaluations_total{{{SEL}}}[{RATE}]))",
                        "{{label}} /s",
                    ),
                    _q(f"max(goal_evaluations_pending{{{SEL}}})", "pending"),
                    _q(
                        f'sum(rate(llm_cost_usd_total{{{SEL}, operation="judge"}}[{RATE}])) * 3600',
                        "USD/h",
                    ),
                ),
                "short",
            ),
        ),
    ),
    RowSpec(
        "Database",
        (
            PanelSpec(
                "Queries by operation",
                "Statements per second by operation.",
                (
                    _q(
                        f"sum by (operation) (rate(db_queries_total{{{SEL}}}[{RATE}]))",
                        "{{operation}}",
                    ),
                ),
                "ops",
            ),
            PanelSpec(
                "Query duration (p95)",
                "p95 statement duration by operation.",
                (
                    _q(
                        f"histogram_quantile(0.95, sum by (operation, le) (rate(db_query_duration_seconds_bucket{{{SEL}}}[{RATE}])))",
                        "{{operation}}",
                    ),
                ),
                "s",
            ),
        ),
    ),
)

# Template variables: their queries are Grafana's label_values() over these series.
# Each narrows the next: cluster, then environment, job, instance.
VARIABLE_SERIES = {
    "cluster": "http_requests_total",
    "env": 'http_requests_total{cluster=~"$cluster"}',
    "job": 'http_requests_total{cluster=~"$cluster", env=~"$env"}',
    "instance": f"up{{{SCOPE}}}",
    "model": f"llm_requests_total{{{SCOPE}}}",
}


def _thresholds(steps: tuple[tuple[float | None, str], ...]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def _panel(spec: PanelSpec) -> Any:
    if spec.kind == "stat":
        panel: Any = stat.Panel()
    else:
        # Thresholds drawn as dashed lines, so a target is visible against the series.
        panel = timeseries.Panel().thresholds_style(
            GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)
        )
    panel = (
        panel.title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(8)
        .thresholds(_thresholds(spec.thresholds))
    )
    if spec.decimals is not None:
        panel = panel.decimals(spec.decimals)
    for index, query in enumerate(spec.queries):
        panel = panel.with_target(
            prometheus.Dataquery()
            .expr(query.expr)
            .legend_format(query.legend)
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
            # A raw histogram's buckets carry exemplars (a request id, or with tracing
            # on a trace id, which the data source links to its trace).
            .exemplar("_bucket{" in query.expr)
        )
    return panel


def _label_variable(name: str, label: str) -> db.QueryVariable:
    """A multi-select over a label's values, "All" (any value) by default."""
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({VARIABLE_SERIES[name]}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def _variables() -> list[Any]:
    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        _label_variable("cluster", "Cluster"),
        _label_variable("env", "Environment"),
        _label_variable("job", "Job"),
        _label_variable("instance", "Instance"),
        _label_variable("model", "Model"),
    ]


def overview() -> db.Dashboard:
    builder = (
        db.Dashboard("Parley")
        .uid("parley-overview")
        .description(
            "Turns and their SLOs, requests, errors, LLM performance, saturation, live "
            "connections and business metrics."
        )
        .tags(["parley", "generated"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .editable()
    )
    for variable in _variables():
        builder = builder.with_variable(variable)
    for row in ROWS:
        builder = builder.with_row(db.Row(row.title))
        for spec in row.panels:
            builder = builder.with_panel(_panel(spec))
    return builder


def dashboard_files() -> dict[str, str]:
    """File name (under deploy/grafana/dashboards) -> JSON text."""
    encoded = JSONEncoder(sort_keys=True, indent=2).encode(overview().build())
    return {
        "parley-overview.json": json.dumps(json.loads(encoded), indent=2, sort_keys=True) + "\n"
    }


def page_panels() -> str:
    """The same rows and panels for the Grafana-free page (deploy/dashboard), as JSON."""
    rows = [
        {
            "title": row.title,
            "panels": [
                {
                    "title": panel.title,
                    "description": panel.description,
                    "unit": panel.unit,
                    "kind": panel.kind,
                    "thresholds": [value for value, _ in panel.thresholds if value is not None],
                    "decimals": panel.decimals,
                    "queries": [{"expr": q.expr, "legend": q.legend} for q in panel.queries],
                }
                for panel in row.panels
            ],
        }
        for row in ROWS
    ]
    return json.dumps({"title": "Parley", "rows": rows}, indent=2) + "\n"


def all_queries() -> list[str]:
    return [query.expr for row in ROWS for panel in row.panels for query in panel.queries]
