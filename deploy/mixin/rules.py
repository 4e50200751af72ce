"""Recording and alerting rules for Parley, named ``level:metric:operations``."""

from __future__ import annotations

from typing import Any

from mixin import config as c

Rule = dict[str, Any]

# For each alert, the quantities it compares: after traffic each must return data, or
# the alert could never fire (checked against a real Prometheus by the integration test).
SIGNALS: dict[str, list[str]] = {}

SELECTOR = f'job="{c.JOB}"'
API = f'{SELECTOR}, path!~"{c.PLATFORM_PATHS}"'
# Every aggregation keeps these, so a global view never merges clusters or environments.
BY = ", ".join(c.AGGREGATION_LABELS)


def _record(name: str, expr: str) -> Rule:
    return {"record": name, "expr": expr}


def _p95(level: str, metric: str, by: str, selector: str = SELECTOR) -> Rule:
    return _record(
        f"{level}:{metric}:p95_rate5m",
        f"histogram_quantile(0.95, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[5m])))",
    )


# "No such series" is a rate of 0 for the job, not an empty result that empties a sum.
ZERO = "0 * job:http_requests:rate5m"
# Turns that failed on Parley's side: the LLM failed, shutdown cut it, a bug crashed it,
# or the database was unavailable after the message was stored.
FAILED_TURNS = "llm_error|interrupted|crashed|db_error"


# Each SLO's recorded bad-event ratio (job:slo_<sli>:ratio_rate<window>), and the rate of
# the events it is a share of (for the minimum-traffic guard).
SLIS = {
    c.AVAILABILITY: "availability_errors",
    c.LATENCY: "latency_slow",
    c.API_AVAILABILITY: "api_errors",
    c.HANDOFF_PICKUP: "handoff_late",
}
EVENTS = {
    c.AVAILABILITY: "slo_turns",
    c.LATENCY: "slo_turns",
    c.API_AVAILABILITY: "slo_api_requests",
    c.HANDOFF_PICKUP: "slo_handoffs",
}


def recording_rules() -> list[Rule]:
    # Only what an alert, another rule, the dashboard or the runbook reads (a test holds
    # it so). Panels that filter by instance read raw series.
    http = [
        _record(
            "job:http_requests:rate5m",
            f"sum by ({BY}) (rate(http_requests_total{{{SELECTOR}}}[5m]))",
        ),
        # The API's own requests: probes and scrapes alone would meet every traffic guard.
        _record(
            "job:api_requests:rate5m",
            f"sum by ({BY}) (rate(http_requests_total{{{API}}}[5m]))",
        ),
        # Work: API requests and WebSocket turns. Failed work: 5xx answers, and streamed
        # turns that failed in-band (an SSE turn whose LLM failed is an HTTP 200).
        _record(
            "job:work:rate5m",
            f"(job:api_requests:rate5m or {ZERO})"
            f' + (sum by ({BY}) (rate(conversation_turns_total{{{SELECTOR}, channel="ws"}}[5m])) or {ZERO})',
        ),
        _record(
            "job:failed_work:rate5m",
            f'(sum by ({BY}) (rate(http_requests_total{{{API}, status=~"5.."}}[5m])) or {ZERO})'
            f' + (sum by ({BY}) (rate(conversation_turns_total{{{SELECTOR}, channel=~"sse|ws", outcome=~"{FAILED_TURNS}"}}[5m])) or {ZERO})',
        ),
        _record(
            "job:failed_work_per_work:ratio_rate5m",
            "job:failed_work:rate5m / job:work:rate5m",
        ),
        # 499 is the client gone, often because Parley was slow: not the client's error.
        _record(
            "job:client_errors_per_api_requests:ratio_rate5m",
            f'(sum by ({BY}) (rate(http_requests_total{{{API}, status=~"4..", status!="499"}}[5m])) or {ZERO})'
            " / job:api_requests:rate5m",
        ),
        # Per-route RED for the dashboard: rate, server-error ratio, p95 duration.
        _record(
            "job_path:http_requests:rate5m",
            f"sum by ({BY}, path) (rate(http_requests_total{{{SELECTOR}}}[5m]))",
        ),
        _record(
            "job_path:http_server_errors:ratio_rate5m",
            # "or 0 *": a route without 5xx has a ratio of 0, not a gap.
            f'(sum by ({BY}, path) (rate(http_requests_total{{{SELECTOR}, status=~"5.."}}[5m]))'
            " or 0 * job_path:http_requests:rate5m) / job_path:http_requests:rate5m",
        ),
        _p95("job_path", "http_request_duration_seconds", f"{BY}, path"),
    ]
    llm = [
        _record(
            "job_model:llm_errors:rate5m",
            f"sum by ({BY}, model, error_type) (rate(llm_errors_total{{{SELECTOR}}}[5m]))",
        ),
        _p95("job_model", "llm_latency_seconds", f"{BY}, model"),
        _p95("job_model", "llm_ttft_seconds", f"{BY}, model"),
    ]
    turn_latency = [_p95("job_channel", "conversation_turn_ttft_seconds", f"{BY}, channel")]
    slo = []
    turns = f'{SELECTOR}, outcome=~"ok|escalated|{FAILED_TURNS}"'
    streamed = f'{SELECTOR}, channel=~"sse|ws"'
    whole = f'{SELECTOR}, channel="http"'
    for window in c.SLI_WINDOWS:
        slo.append(
            _record(
                f"job:slo_turns:rate{window}",
                f"sum by ({BY}) (rate(conversation_turns_total{{{turns}}}[{window}]))",
            )
        )
        slo.append(
            _record(
                f"job:slo_availability_errors:ratio_rate{window}",
                # "or ... * 0": no failed turn at all is a ratio of 0, not an empty result.
                f'(sum by ({BY}) (rate(conversation_turns_total{{{SELECTOR}, outcome=~"{FAILED_TURNS}"}}[{window}]))'
                f" or 0 * job:slo_turns:rate{window})"
                f" / job:slo_turns:rate{window}",
            )
        )
        slo.append(
            _record(
                f"job:slo_latency_slow:ratio_rate{window}",
                f"1 - ("
                f'(sum by ({BY}) (rate(conversation_turn_ttft_seconds_bucket{{{streamed}, le="{c.TURN_TTFT_THRESHOLD_SECONDS}"}}[{window}]))'
                f' + sum by ({BY}) (rate(conversation_turn_duration_seconds_bucket{{{whole}, le="{c.TURN_DURATION_THRESHOLD_SECONDS}"}}[{window}])))'
                f" / (sum by ({BY}) (rate(conversation_turn_ttft_seconds_count{{{streamed}}}[{window}]))"
                f" + sum by ({BY}) (rate(conversation_turn_duration_seconds_count{{{whole}}}[{window}])))"
                f")",
            )
        )
        slo.append(
            _record(
                f"job:slo_api_requests:rate{window}",
                f"sum by ({BY}) (rate(http_requests_total{{{API}}}[{window}]))",
            )
        )
        slo.append(
            _record(
                f"job:slo_api_errors:ratio_rate{window}",
                f'(sum by ({BY}) (rate(http_requests_total{{{API}, status=~"5.."}}[{window}]))'
                f" or 0 * job:slo_api_requests:rate{window})"
                f" / job:slo_api_requests:rate{window}",
            )
        )
    slo += _handoff_rules()
    slo += _goal_rules()
    for objective, sli in SLIS.items():
        labels = {"slo": objective.name}
        slo += [
            {
                "record": "slo:objective:ratio",
                "expr": f"vector({objective.objective})",
                "labels": labels,
            },
            {
                "record": "slo:error_budget:ratio",
                "expr": f"vector({objective.error_budget})",
                "labels": labels,
            },
            {
                "record": "job:slo_error_budget_remaining:ratio",
                "expr": f"1 - job:slo_{sli}:ratio_rate{c.SLO_PERIOD} / {objective.error_budget}",
                "labels": labels,
            },
        ]
    return http + llm + turn_latency + slo


def _handoff_rules() -> list[Rule]:
    """The handoff's service level (picked up within the target; abandoned ones count as
    not), containment and abandonment."""
    rules = []
    target = f'le="{float(c.HANDOFF_PICKUP_TARGET_SECONDS)}"'  # as prometheus_client writes it
    for window in c.HANDOFF_SLI_WINDOWS:
        picked = f"sum by ({BY}) (rate(handoff_wait_seconds_count{{{SELECTOR}}}[{window}]))"
        abandoned = f"sum by ({BY}) (rate(handoffs_abandoned_total{{{SELECTOR}}}[{window}]))"
        in_time = (
            f"sum by ({BY}) (rate(handoff_wait_seconds_bucket{{{SELECTOR}, {target}}}[{window}]))"
        )
        rules.append(
            _record(
                f"job:slo_handoffs:rate{window}",
                f"({picked} or 0 * {abandoned}) + ({abandoned} or 0 * {picked})",
            )
        )
        rules.append(
            _record(
                f"job:slo_handoff_late:ratio_rate{window}",
                f"1 - (({in_time}) or 0 * job:slo_handoffs:rate{window})"
                f" / job:slo_handoffs:rate{window}",
            )
        )
    window = c.HANDOFF_RATIO_WINDOW
    ended = f"sum by ({BY}) (rate(conversations_ended_total{{{SELECTOR}}}[{window}]))"
    rules += [
        _record(
            f"job:handoff_pickup_within_target:ratio_rate{window}",
            f"1 - job:slo_handoff_late:ratio_rate{window}",
        ),
        # Conversations that ended without ever being handed to a human, of all ended.
        _record(
            f"job:conversation_containment:ratio_rate{window}",
            f'(sum by ({BY}) (rate(conversations_ended_total{{{SELECTOR}, escalated="false"}}[{window}]))'
            f" or 0 * {ended}) / {ended}",
        ),
        # Handoffs whose customer left before an agent came, of handoffs opened.
        _record(
            f"job:handoff_abandonment:ratio_rate{window}",
            f"(sum by ({BY}) (rate(handoffs_abandoned_total{{{SELECTOR}}}[{window}]))"
            f" or 0 * sum by ({BY}) (rate(handoffs_total{{{SELECTOR}}}[{window}])))"
            f" / sum by ({BY}) (rate(handoffs_total{{{SELECTOR}}}[{window}]))",
        ),
    ]
    return rules


# A goal's outcomes with a verdict, and the achieved ones, over a window.
_VERDICTS = 'outcome=~"achieved|not_achieved"'


def _goal_rules() -> list[Rule]:
    """Per goal: verdicts, the success ratio (achieved of verdicts), its SLO's budget left,
    containment; the SLO's objective and budget as constants for the dashboard."""
    by = f"{BY}, goal_id"
    rules = []
    for window in c.GOAL_SLI_WINDOWS:
        verdicts = f"job_goal:goal_verdicts:rate{window}"
        rules += [
            _record(
                verdicts,
                f"sum by ({by}) (rate(conversations_ended_total{{{SELECTOR}, {_VERDICTS}}}[{window}]))",
            ),
            _record(
                f"job_goal:goal_success:ratio_rate{window}",
                f'(sum by ({by}) (rate(conversations_ended_total{{{SELECTOR}, outcome="achieved"}}[{window}]))'
                f" or 0 * {verdicts}) / {verdicts}",
            ),
        ]
    window = c.HANDOFF_RATIO_WINDOW
    ended = f"sum by ({by}) (rate(conversations_ended_total{{{SELECTOR}}}[{window}]))"
    objective = c.GOAL_SUCCESS
    labels = {"slo": objective.name}
    rules += [
        _record(f"job_goal:conversations_ended:rate{window}", ended),
        _record(
            f"job_goal:conversation_containment:ratio_rate{window}",
            f'(sum by ({by}) (rate(conversations_ended_total{{{SELECTOR}, escalated="false"}}[{window}]))'
            f" or 0 * {ended}) / {ended}",
        ),
        {
            "record": "slo:objective:ratio",
            "expr": f"vector({objective.objective})",
            "labels": labels,
        },
        {
            "record": "slo:error_budget:ratio",
            "expr": f"vector({objective.error_budget})",
            "labels": labels,
        },
        {
            "record": "job_goal:slo_error_budget_remaining:ratio",
            "expr": f"1 - (1 - job_goal:goal_success:ratio_rate{c.SLO_PERIOD})"
            f" / {objective.error_budget}",
            "labels": labels,
        },
    ]
    return rules


def _goal_alerts() -> list[Rule]:
    """Tickets: a goal's success burning its budget slowly, or dropping below its own
    normal. Never pages: a goal's verdicts are business, not an outage."""
    slo, alerts = c.GOAL_SUCCESS, []
    for severity, long, short, rate in c.GOAL_BURN_RATE_ALERTS:
        threshold = f"{rate * slo.error_budget:g}"
        enough = f"job_goal:goal_verdicts:rate{long} * {_seconds(long)} >= {c.GOAL_MIN_VERDICTS}"
        alerts.append(
            _alert(
                "GoalSuccessBudgetBurn",
                f"1 - job_goal:goal_success:ratio_rate{long} > {threshold}"
                f" and 1 - job_goal:goal_success:ratio_rate{short} > {threshold}"
                f" and {enough}",
                for_="30m",
                severity=severity,
                labels={"long": long, "short": short},
                signals=[
                    f"job_goal:goal_success:ratio_rate{long}",
                    f"job_goal:goal_success:ratio_rate{short}",
                    f"job_goal:goal_verdicts:rate{long}",
                ],
                summary="Goal {{ $labels.goal_id }} is burning its success error budget",
                description=(
                    f"{slo.description[0].upper()}{slo.description[1:]}: the SLO is "
                    f"{slo.objective:.0%}. Over {long} {{{{ $value | humanizePercentage }}}} "
                    f"of goal {{{{ $labels.goal_id }}}}'s verdicts were not achieved ({rate:g}x "
                    f"the sustainable rate; over {short} too)."
                ),
            )
        )
    drop, baseline = c.GOAL_DROP_WINDOW, c.GOAL_BASELINE_WINDOW
    alerts.append(
        _alert(
            "GoalSuccessRateDropped",
            f"job_goal:goal_success:ratio_rate{drop}"
            f" < {c.GOAL_DROP_FACTOR} * job_goal:goal_success:ratio_rate{baseline}"
            f" and job_goal:goal_verdicts:rate{drop} * {_seconds(drop)} >= {c.GOAL_MIN_VERDICTS}",
            for_="30m",
            severity="warning",
            signals=[
                f"job_goal:goal_success:ratio_rate{drop}",
                f"job_goal:goal_success:ratio_rate{baseline}",
            ],
            summary="Goal {{ $labels.goal_id }} succeeds less often than it used to",
            description=(
                f"Over {drop} {{{{ $value | humanizePercentage }}}} of goal "
                f"{{{{ $labels.goal_id }}}}'s verdicts were achieved: below "
                f"{c.GOAL_DROP_FACTOR:.0%} of its {baseline} ratio (a prompt, model or "
                "product change?)."
            ),
        )
    )
    return alerts


def _alert(
    name: str,
    expr: str,
    *,
    for_: str,
    severity: str,
    summary: str,
    description: str,
    signals: list[str],
    labels: dict[str, str] | None = None,
) -> Rule:
    SIGNALS[name] = SIGNALS.get(name, []) + signals
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **(labels or {})},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{c.RUNBOOK_URL}#{name.lower()}",
        },
    }


def _seconds(window: str) -> int:
    units = {"m": 60, "h": 3600, "d": 86400}
    return int(window[:-1]) * units[window[-1]]


def _burn_rate_alerts(
    slo: c.SLO,
    name: str,
    what: str,
    windows: tuple[tuple[str, str, str, float], ...] = c.BURN_RATE_ALERTS,
    guard: str | None = None,
) -> list[Rule]:
    """One alert per window pair, labelled with its windows (as kubernetes-mixin does), so
    an on-call sees which pair fired; no alert below the minimum traffic (``guard``, given
    the pair's long and short windows; by default events a second in the short one)."""
    sli, events = SLIS[slo], EVENTS[slo]
    alerts = []
    for severity, long, short, rate in windows:
        threshold = f"({rate} * {slo.error_budget})"
        # The default guard reads the short window: a long one dilutes young traffic.
        enough = guard or f"job:{events}:rate{short} > {c.MIN_EVENTS_PER_SECOND}"
        alerts.append(
            _alert(
                name,
                f"job:slo_{sli}:ratio_rate{long} > {threshold}"
                f" and job:slo_{sli}:ratio_rate{short} > {threshold}"
                f" and on({BY}) {enough.format(long=long, short=short, long_seconds=_seconds(long))}",
                for_="2m" if severity == "critical" else "15m",
                severity=severity,
                labels={"long": long, "short": short},
                summary=f"{what[0].upper()}{what[1:]} are burning their {slo.name} error budget",
                signals=[f"job:slo_{sli}:ratio_rate{long}", f"job:slo_{sli}:ratio_rate{short}"],
                description=(
                    f"{slo.description[0].upper()}{slo.description[1:]}: the SLO is "
                    f"{slo.objective:.1%}. Over {long} {{{{ $value | humanizePercentage }}}} "
                    f"of {what} were bad ({rate:g}x the sustainable rate; over "
                    f"{short} too): at this rate the 30-day budget runs out early."
                ),
            )
        )
    return alerts


# Calls in flight, and calls that ended with an answer or an error of the provider's in the
# hang window: a call cancelled because its client gave up ended nothing, so clients
# giving up on a hung provider do not reset the alert's clock.
IN_FLIGHT = f"sum by ({BY}, model) (llm_requests_in_flight{{{SELECTOR}}})"
ENDED = (
    f'(sum by ({BY}, model) (increase(llm_requests_total{{{SELECTOR}, status="success"}}[{c.LLM_HANG_WINDOW}])) or 0 * {IN_FLIGHT})'
    f' + (sum by ({BY}, model) (increase(llm_errors_total{{{SELECTOR}, error_type!="cancelled"}}[{c.LLM_HANG_WINDOW}])) or 0 * {IN_FLIGHT})'
)


def alerting_rules() -> list[Rule]:
    return [
        _alert(
            "HighErrorRate",
            f"job:failed_work_per_work:ratio_rate5m > {c.ERROR_RATIO_THRESHOLD}"
            f" and on({BY}) job:work:rate5m > {c.MIN_REQUESTS_PER_SECOND}",
            signals=["job:failed_work_per_work:ratio_rate5m", "job:work:rate5m"],
            for_="5m",
            severity="warning",
            summary="High server error rate",
            description="{{ $value | humanizePercentage }} of API requests and turns to "
            "{{ $labels.job }} failed on the server's side (5xx, or a streamed turn that "
            f"failed) over 5 minutes (threshold {c.ERROR_RATIO_THRESHOLD:.0%}).",
        ),
        _alert(
            "ClientErrorFlood",
            f"job:client_errors_per_api_requests:ratio_rate5m > {c.CLIENT_ERROR_RATIO_THRESHOLD}"
            f" and on({BY}) job:api_requests:rate5m > {c.MIN_REQUESTS_PER_SECOND}",
            signals=["job:client_errors_per_api_requests:ratio_rate5m"],
            for_="15m",
            severity="warning",
            summary="Clients send many bad requests",
            description="{{ $value | humanizePercentage }} of API requests to "
            "{{ $labels.job }} were refused as the client's error (4xx; 499, the client gone, "
            "aside) over 5 minutes: a misbehaving client, not an outage.",
        ),
        _alert(
            "HighLatency",
            f'job_path:http_request_duration_seconds:p95_rate5m{{path!="{c.MESSAGES_PATH}"}}'
            f" > {c.LATENCY_P95_THRESHOLD_SECONDS}",
            signals=["job_path:http_request_duration_seconds:p95_rate5m"],
            for_="5m",
            severity="warning",
            summary="API latency is high",
            description="p95 latency of {{ $labels.path }} is {{ $value | humanizeDuration }} "
            f"(threshold {c.LATENCY_P95_THRESHOLD_SECONDS:g}s).",
        ),
        _alert(
            "TurnSlowFirstToken",
            f"job_channel:conversation_turn_ttft_seconds:p95_rate5m > {c.TURN_TTFT_P95_THRESHOLD_SECONDS}",
            signals=["job_channel:conversation_turn_ttft_seconds:p95_rate5m"],
            for_="10m",
            severity="warning",
            summary="Streamed turns start slowly",
            description="p95 time from a message accepted to its first token sent on "
            "{{ $labels.channel }} is {{ $value | humanizeDuration }} "
            f"(threshold {c.TURN_TTFT_P95_THRESHOLD_SECONDS:g}s).",
        ),
        _alert(
            "LLMServiceDown",
            # A total outage pages within 6 minutes of steady traffic failing: a 2-minute
            # ratio, then 3 minutes of `for`.
            f'(sum by ({BY}) (rate(llm_requests_total{{{SELECTOR}, status="error"}}[2m]))'
            f" / sum by ({BY}) (rate(llm_requests_total{{{SELECTOR}}}[2m])) >= {c.LLM_DOWN_ERROR_RATIO})"
            # The guideline's "no LLM calls while conversations go on": turns that needed
            # the LLM, and no call made or ended (the gateway bypassed, the metrics lost).
            f' or (sum by ({BY}) (increase(conversation_turns_total{{{SELECTOR}, outcome=~"ok|llm_error"}}[10m])) > 0'
            f" unless on({BY}) sum by ({BY}) (increase(llm_requests_total{{{SELECTOR}}}[10m])) > 0)"
            f" or (absent_over_time(llm_requests_total{{{SELECTOR}}}[10m]) and on() "
            f"count(up{{{SELECTOR}}} == 1) > 0)",
            signals=[
                f'sum by ({BY}) (rate(llm_requests_total{{{SELECTOR}, status="error"}}[2m]))'
                f" / sum by ({BY}) (rate(llm_requests_total{{{SELECTOR}}}[2m]))",
                f"sum by ({BY}) (increase(conversation_turns_total{{{SELECTOR}}}[10m]))",
            ],
            for_="3m",
            severity="critical",
            summary="LLM calls are failing or have vanished",
            description="For {{ $labels.job }}: at least 90% of LLM calls fail over 2 "
            "minutes, or turns go on with no LLM call at all, or Parley is up without LLM "
            "metrics.",
        ),
        _alert(
            "LLMRequestsHanging",
            f"{IN_FLIGHT} > 0 and {ENDED} < 0.5",
            signals=[IN_FLIGHT, ENDED],
            for_="5m",
            severity="critical",
            summary="LLM calls hang: started, never ending",
            description="{{ $value }} calls to {{ $labels.model }} are in flight and none has "
            f"ended in {c.LLM_HANG_WINDOW} (calls the client gave up on aside): the provider "
            "accepts requests and does not answer.",
        ),
        _alert(
            "ParleyTargetDown",
            f"up{{{SELECTOR}}} == 0",
            signals=[f"up{{{SELECTOR}}}"],
            for_="5m",
            severity="warning",
            summary="A Parley replica does not answer scrapes",
            description="{{ $labels.instance }} has not answered scrapes for 5 minutes; the "
            "other replicas keep serving.",
        ),
        _alert(
            "ParleyDown",
            # Most replicas down, or a cluster's targets all gone (seen in the last day,
            # none now: on a global view `absent` sees the other clusters' series), or
            # none configured at all. Every branch keeps the job label, which the
            # inhibition of the rest matches on.
            f"sum by ({BY}) (up{{{SELECTOR}}}) / count by ({BY}) (up{{{SELECTOR}}}) < 0.5"
            f" or (count by ({BY}) (last_over_time(up{{{SELECTOR}}}[1d]))"
            f" unless on({BY}) count by ({BY}) (up{{{SELECTOR}}}))"
            f" or absent(up{{{SELECTOR}}})",
            signals=[f"up{{{SELECTOR}}}"],
            for_="1m",
            severity="critical",
            summary="Most Parley replicas do not answer",
            description="Most {{ $labels.job }} targets{{ with $labels.cluster }} in {{ . }}"
            "{{ end }} have not answered scrapes for a minute (or none is left): the service "
            "is down, or Prometheus cannot see it.",
        ),
        _alert(
            "LLMErrorRatioHigh",
            f'sum by ({BY}, model, error_type) (rate(llm_errors_total{{{SELECTOR}, error_type!~"rate_limited|cancelled"}}[5m]))'
            f" / ignoring(error_type) group_left sum by ({BY}, model) (rate(llm_requests_total{{{SELECTOR}}}[5m]))"
            f" > {c.LLM_ERROR_RATIO_THRESHOLD}",
            signals=[
                f'sum by ({BY}, model, error_type) (rate(llm_errors_total{{{SELECTOR}, error_type!~"rate_limited|cancelled"}}[5m]))'
                f" / ignoring(error_type) group_left sum by ({BY}, model) (rate(llm_requests_total{{{SELECTOR}}}[5m]))"
            ],
            for_="5m",
            severity="warning",
            summary="LLM calls fail with {{ $labels.error_type }}",
            description="{{ $value | humanizePercentage }} of calls to {{ $labels.model }} fail "
            f"with {{{{ $labels.error_type }}}} (threshold {c.LLM_ERROR_RATIO_THRESHOLD:.0%}).",
        ),
        _alert(
            "LLMRateLimited",
            f'sum by ({BY}, model) (rate(llm_errors_total{{{SELECTOR}, error_type="rate_limited"}}[5m]))'
            f" / sum by ({BY}, model) (rate(llm_requests_total{{{SELECTOR}}}[5m]))"
            f" > {c.LLM_RATE_LIMITED_RATIO_THRESHOLD}",
            signals=[
                f'sum by ({BY}, model) (rate(llm_errors_total{{{SELECTOR}, error_type="rate_limited"}}[5m]))'
                f" / sum by ({BY}, model) (rate(llm_requests_total{{{SELECTOR}}}[5m]))"
            ],
            for_="10m",
            severity="warning",
            summary="The LLM provider is rate-limiting Parley",
            description="{{ $value | humanizePercentage }} of calls to {{ $labels.model }} fail "
            "on rate limits even after retries: the quota is too small for the traffic.",
        ),
        _alert(
            "LLMSlowTimeToFirstToken",
            f"job_model:llm_ttft_seconds:p95_rate5m > {c.TTFT_P95_THRESHOLD_SECONDS}",
            signals=["job_model:llm_ttft_seconds:p95_rate5m"],
            for_="10m",
            severity="warning",
            summary="Streamed replies start slowly",
            description="p95 time to first token for {{ $labels.model }} is "
            f"{{{{ $value | humanizeDuration }}}} (threshold {c.TTFT_P95_THRESHOLD_SECONDS:g}s).",
        ),
        _alert(
            "EscalationSpike",
            f"sum by ({BY}) (rate(escalations_total{{{SELECTOR}}}[15m]))"
            f" > {c.ESCALATION_SPIKE_FACTOR} * sum by ({BY}) (rate(escalations_total{{{SELECTOR}}}[{c.ESCALATION_BASELINE}] offset 15m))"
            f" and sum by ({BY}) (increase(escalations_total{{{SELECTOR}}}[15m])) >= {c.ESCALATION_SPIKE_MIN_COUNT}"
            # A full baseline: the series were there when it began. New series (a fresh
            # deploy) diluted it, and every first escalations fired this for ~2 hours.
            f" and on({BY}) count by ({BY}) (escalations_total{{{SELECTOR}}} offset {c.ESCALATION_BASELINE}15m) > 0",
            signals=[
                f"sum by ({BY}) (rate(escalations_total{{{SELECTOR}}}[15m]))",
                f"sum by ({BY}) (increase(escalations_total{{{SELECTOR}}}[15m]))",
            ],
            for_="5m",
            severity="warning",
            summary="Conversations are escalating to humans unusually often",
            description="Escalations run at {{ $value | humanize }}/s, more than "
            f"{c.ESCALATION_SPIKE_FACTOR:g}x the rate of the 6 hours before.",
        ),
        _alert(
            "HandoffQueueStalled",
            # Every replica reads the same queue from the store: the max is the cluster's.
            f"max by ({BY}, goal_id) (handoff_oldest_waiting_seconds{{{SELECTOR}}})"
            f" > {c.HANDOFF_STALLED_SECONDS}",
            signals=[f"max by ({BY}, goal_id) (handoff_oldest_waiting_seconds{{{SELECTOR}}})"],
            for_="5m",
            severity="critical",
            summary="Customers wait for a human agent and nobody picks them up",
            description="The longest wait for an agent on goal {{ $labels.goal_id }} is "
            "{{ $value | humanizeDuration }} (threshold "
            f"{c.HANDOFF_STALLED_SECONDS // 60} minutes).",
        ),
        _alert(
            "ApiKeyBudgetNearlySpent",
            # Every replica exports the same gauges (read from the store): one per key.
            f"min by ({BY}, key_name) (api_key_budget_remaining_usd{{{SELECTOR}}})"
            f" < {1 - c.KEY_BUDGET_WARNING_SHARE:g}"
            f" * max by ({BY}, key_name) (api_key_budget_usd{{{SELECTOR}}})",
            signals=[
                f"min by ({BY}, key_name) (api_key_budget_remaining_usd{{{SELECTOR}}})",
                f"max by ({BY}, key_name) (api_key_budget_usd{{{SELECTOR}}})",
            ],
            for_="1m",
            severity="warning",
            summary="An API key has spent most of its budget",
            description="Key {{ $labels.key_name }} has {{ $value | humanize }} US dollars "
            f"of its budget left (less than {1 - c.KEY_BUDGET_WARNING_SHARE:.0%}): at the "
            "budget its turns get 429 budget_exceeded until the period resets.",
        ),
        _alert(
            "RateLimiterUnavailable",
            # Counted at most once a second per replica (Redis is tried again a second
            # after a failure): any increase over minutes means it stays unreachable.
            f"sum by ({BY}) (increase(rate_limiter_errors_total{{{SELECTOR}}}[5m])) > 0",
            signals=[f"sum by ({BY}) (increase(rate_limiter_errors_total{{{SELECTOR}}}[5m]))"],
            for_="5m",
            severity="warning",
            summary="The shared rate limiter (Redis) cannot be reached",
            description="{{ $value | humanize }} rate-limit checks of {{ $labels.job }} "
            "could not reach Redis in the last 5 minutes: the limits are not counted "
            "(requests let through) or requests are refused with 503, as "
            "PARLEY_RATE_LIMIT_FAILURE_MODE says.",
        ),
        _alert(
            "MetricLabelCapReached",
            f"sum by ({BY}, metric, label) (increase(metric_label_overflow_total{{{SELECTOR}}}[1h])) > 0",
            signals=[
                f"sum by ({BY}, metric, label) (increase(metric_label_overflow_total{{{SELECTOR}}}[1h]))"
            ],
            for_="0s",
            severity="warning",
            summary="A capped metric label is folding values into 'other'",
            description="Label {{ $labels.label }} of {{ $labels.metric }} folded "
            "{{ $value | humanize }} values into 'other' in the last hour.",
        ),
        _alert(
            "WebhookDeliveryFailing",
            # Every replica reads the same outbox: the max is the cluster's.
            f"max by ({BY}) (webhook_outbox_oldest_pending_seconds{{{SELECTOR}}}) > {c.WEBHOOK_STALE_SECONDS}"
            f' or sum by ({BY}) (increase(webhook_deliveries_total{{{SELECTOR}, outcome="failed"}}[1h])) > 0',
            signals=[
                f"max by ({BY}) (webhook_outbox_oldest_pending_seconds{{{SELECTOR}}})",
                f'sum by ({BY}) (increase(webhook_deliveries_total{{{SELECTOR}, outcome="failed"}}[1h]))',
            ],
            for_="10m",
            severity="warning",
            summary="Webhooks are not getting through",
            description="A webhook delivery of {{ $labels.job }} has waited more than "
            f"{c.WEBHOOK_STALE_SECONDS // 60} minutes, or deliveries were given up on in the "
            "last hour (value: {{ $value | humanize }}); `parley webhooks failed` lists them.",
        ),
        *_burn_rate_alerts(c.AVAILABILITY, "TurnAvailabilityBudgetBurn", "turns"),
        *_burn_rate_alerts(c.LATENCY, "TurnLatencyBudgetBurn", "turns"),
        *_burn_rate_alerts(c.API_AVAILABILITY, "ApiAvailabilityBudgetBurn", "API requests"),
        *_burn_rate_alerts(
            c.HANDOFF_PICKUP,
            "HandoffPickupBudgetBurn",
            "handoffs",
            c.HANDOFF_BURN_RATE_ALERTS,
            # Handoffs are few: at least this many in the long window.
            f"job:slo_handoffs:rate{{long}} * {{long_seconds}} >= {c.HANDOFF_MIN_COUNT}",
        ),
        *_goal_alerts(),
    ]


def rule_files() -> dict[str, dict[str, Any]]:
    """File name (under deploy/prometheus/rules) -> content."""
    return {
        "parley-recording.yml": {
            "groups": [{"name": "parley.recording", "rules": recording_rules()}]
        },
        "parley-alerts.yml": {"groups": [{"name": "parley.alerts", "rules": alerting_rules()}]},
    }
