"""Prometheus config and rules: generated in sync, valid for promtool, every alert tested."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from mixin.config import DEFAULT_RUNBOOK_URL, RUNBOOK_URL
from tests.support.tools import require_tool

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
SHIPPED_RUNBOOK = DEPLOY / "dashboard" / "runbook.html"
PROMETHEUS = DEPLOY / "prometheus"


def _generate() -> dict[Path, str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_generate", DEPLOY / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    outputs: dict[Path, str] = module.outputs()
    return outputs


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _alerts() -> list[dict[str, object]]:
    content = yaml.safe_load((PROMETHEUS / "rules" / "parley-alerts.yml").read_text())
    return [rule for group in content["groups"] for rule in group["rules"]]


def test_committed_rules_and_dashboards_are_what_the_code_generates() -> None:
    """Run `make docs` (deploy/generate.py) when this fails."""
    for path, text in _generate().items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is out of date"


@pytest.mark.integration
def test_promtool_accepts_the_config_and_rules() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    result = _promtool(
        "check", "rules", *sorted(str(p) for p in (PROMETHEUS / "rules").glob("*.yml"))
    )
    assert result.returncode == 0, result.stdout + result.stderr


# alerts.test.yml, and goals.test.yml for the alerts that compare a week (evaluated every
# 10 minutes there, so a simulated week takes seconds).
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.test.yml"))


def _rule_test_cases() -> list[Any]:
    """Each test case of each rule test file, by name: promtool runs a file's cases one
    after another (alerts.test.yml took a minute), and as tests of their own they spread
    over make test's processes."""
    return [
        pytest.param(
            path, index, id=f"{path.stem}:{re.sub(r'[^a-z0-9]+', '-', case['name'].lower())}"
        )
        for path in TEST_FILES
        for index, case in enumerate(yaml.safe_load(path.read_text())["tests"])
    ]


@pytest.mark.integration
@pytest.mark.parametrize(("path", "index"), _rule_test_cases())
def test_promtool_rule_unit_test_passes(path: Path, index: int, tmp_path: Path) -> None:
    """The file's settings (rules, interval, group order) with this one case."""
    document = yaml.safe_load(path.read_text())
    document["rule_files"] = [
        str((path.parent / rules).resolve()) for rules in document["rule_files"]
    ]
    document["tests"] = [document["tests"][index]]
    case = tmp_path / path.name
    case.write_text(yaml.safe_dump(document, sort_keys=False))
    result = _promtool("test", "rules", str(case))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_test_file_evaluates_the_recording_rules_before_the_alerts() -> None:
    """Left to promtool, the groups' order is random: the alerts could read the recorded
    ratios one evaluation old (past the lookback at 10 minutes: no value at all)."""
    groups = [
        group["name"]
        for rules in sorted((PROMETHEUS / "rules").glob("*.yml"))
        for group in yaml.safe_load(rules.read_text())["groups"]
    ]
    for path in TEST_FILES:
        order = yaml.safe_load(path.read_text()).get("group_eval_order")
        assert order == ["parley.recording", "parley.alerts"], path.name
        assert sorted(order) == sorted(groups)


def test_every_alert_has_a_firing_and_a_silent_test_case() -> None:
    tests = [case for path in TEST_FILES for case in yaml.safe_load(path.read_text())["tests"]]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", ()):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {str(alert["alert"]) for alert in _alerts()}
    assert names - fires == set(), "alerts never shown to fire"
    assert names - silent == set(), "alerts never shown to stay silent"


def test_every_alert_has_severity_summary_description_and_an_absolute_runbook_link() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    sections = {line[3:].strip().lower() for line in runbook.splitlines() if line.startswith("## ")}
    for alert in _alerts():
        labels, annotations = alert["labels"], alert["annotations"]
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        assert labels["severity"] in {"critical", "warning"}
        assert annotations["summary"]
        assert "{{" in annotations["description"], "the description shows the value or labels"
        # Absolute, from the one base in the mixin's config: the link is followed from a
        # pager or a chat message, where a relative path leads nowhere.
        url = urlsplit(str(annotations["runbook_url"]))
        assert url.scheme in ("http", "https")
        assert url.netloc
        assert url._replace(fragment="").geturl() == RUNBOOK_URL
        assert url.fragment in sections, f"docs/runbook.md lacks a section for {alert['alert']}"
        # ...and the page shipped at the default address has that anchor.
        assert f'<section id="{url.fragment}">' in SHIPPED_RUNBOOK.read_text(), alert["alert"]


@pytest.mark.integration  # a subprocess: the setting is read when the mixin is imported
def test_the_runbook_url_is_a_setting_of_the_mixin() -> None:
    """It pointed at a placeholder repository; now the shipped page by default, or yours."""
    assert RUNBOOK_URL == DEFAULT_RUNBOOK_URL  # what the committed rules link to
    yours = "https://wiki.example.com/parley/runbook"
    generated = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mixin.rules import alerting_rules;"
            "print(alerting_rules()[0]['annotations']['runbook_url'])",
        ],
        cwd=DEPLOY,
        env={**os.environ, "RUNBOOK_URL": yours},
        capture_output=True,
        text=True,
        check=True,
    )
    assert generated.stdout.strip() == f"{yours}#higherrorrate"


def test_recording_rules_follow_level_metric_operations() -> None:
    content = yaml.safe_load((PROMETHEUS / "rules" / "parley-recording.yml").read_text())
    for group in content["groups"]:
        for rule in group["rules"]:
            assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]


@pytest.mark.parametrize("path", sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")))
def test_dashboards_have_variables_units_and_thresholds(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "cluster", "env", "job", "instance", "model"} <= variables
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["fieldConfig"]["defaults"]["thresholds"]["steps"], panel["title"]
        assert panel["targets"], panel["title"]


def test_every_aggregation_keeps_cluster_env_namespace_and_job() -> None:
    """On a global view (Thanos, Mimir, VictoriaMetrics) a rule that drops these labels
    would merge clusters and environments into one number."""
    from mixin.rules import alerting_rules, recording_rules

    for rule in recording_rules() + alerting_rules():
        for clause in re.findall(r"\b(?:by|on) ?\(([^)]*)\)", rule["expr"]):
            if clause:  # on() joins a scalar-like guard: nothing to keep
                labels = {label.strip() for label in clause.split(",")}
                assert {"cluster", "env", "namespace", "job"} <= labels, (rule, clause)


def test_every_dashboard_query_is_scoped_by_the_cluster_env_and_job_variables() -> None:
    from mixin.dashboards import all_queries

    for query in all_queries():
        for selector in re.findall(r"\{([^}]*)\}", query.replace("{{", "").replace("}}", "")):
            if selector.startswith("slo="):  # SLO metadata: one value for every Parley
                continue
            assert 'cluster=~"$cluster", env=~"$env", job=~"$job"' in selector, query


def test_compose_mounts_what_deploy_holds() -> None:
    """Every file the Compose stack mounts exists, and Grafana's datasource uid matches."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"


def test_every_recording_rule_is_used() -> None:
    """A rule nobody reads costs evaluations and series: each one feeds an alert, another
    rule, a dashboard panel, or a query the runbook tells the on-call to run."""
    from mixin.dashboards import all_queries
    from mixin.rules import alerting_rules, recording_rules

    rules = recording_rules()
    runbook = (Path(__file__).parents[2] / "docs" / "runbook.md").read_text()
    readers = [a["expr"] for a in alerting_rules()] + all_queries() + [runbook]
    unused = sorted(
        {
            rule["record"]
            for rule in rules
            if not any(rule["record"] in text for text in readers)
            and not any(rule["record"] in other["expr"] for other in rules if other is not rule)
        }
    )
    assert unused == []


@pytest.mark.integration
def test_vmalert_accepts_the_same_rule_files() -> None:
    """VictoriaMetrics' rule evaluator can run the rules against the long-term store."""
    vmalert = require_tool("vmalert")
    checked = subprocess.run(
        [vmalert, "-dryRun", f"-rule={PROMETHEUS / 'rules' / '*.yml'}"],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr[-2000:]
