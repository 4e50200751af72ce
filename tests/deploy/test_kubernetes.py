"""deploy/kubernetes: built by Kustomize, valid against Kubernetes' own schemas (offline),
and saying what an operator relies on: probes, a grace period past the drain, a non-root
restricted container, secrets from a Secret, the mixin's rules and dashboards."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from parley.config import Settings
from tests.support.tools import require_tool

ROOT = Path(__file__).parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests promise to work on (preStop sleep: 1.32 GA).
KUBERNETES_VERSION = "1.32.0"
CUSTOM = {"monitoring.coreos.com/v1"}  # Prometheus Operator's CRDs: checked below

# One test process for the module (make test runs several): kustomize builds once.
pytestmark = pytest.mark.xdist_group("kubernetes")


@pytest.fixture(scope="module")
def objects() -> dict[str, dict[str, Any]]:
    require_tool("kubectl")
    built = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES)], capture_output=True, text=True, check=True
    ).stdout
    return {doc["kind"]: doc for doc in yaml.safe_load_all(built)}


def test_kustomize_builds_every_object_an_operator_expects(
    objects: dict[str, dict[str, Any]],
) -> None:
    assert set(objects) == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PrometheusRule",
        "ConfigMap",
    }
    for obj in objects.values():
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "parley"


def test_every_replica_counts_rate_limits_in_the_same_redis(
    objects: dict[str, dict[str, Any]],
) -> None:
    """The autoscaler runs several pods: their limits must be counted once, in Redis."""
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    secret = env["PARLEY_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "parley", "key": "redis-url"}  # required, not optional


def test_built_objects_are_valid_for_kubernetes(objects: dict[str, dict[str, Any]]) -> None:
    for obj in objects.values():
        if obj["apiVersion"] not in CUSTOM:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_deployment_drains_within_its_grace_and_runs_restricted(
    objects: dict[str, dict[str, Any]],
) -> None:
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    drain = float(env["PARLEY_SHUTDOWN_GRACE_SECONDS"]["value"])
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > drain + pause
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    for each in pod["containers"] + pod["initContainers"]:
        assert each["securityContext"]["readOnlyRootFilesystem"] is True
        assert each["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert each["resources"]["requests"]
        assert each["resources"]["limits"]["memory"]
    # Secrets come from the Secret, never from the manifest.
    for name in ("PARLEY_DATABASE_URL", "GROQ_API_KEY", "PARLEY_API_KEYS"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "parley", name
    # Every variable set is one Parley reads (a typo would be ignored silently).
    known = {f"PARLEY_{name.upper()}" for name in Settings.model_fields} | {"GROQ_API_KEY"}
    assert set(env) <= known


def test_autoscaling_reads_a_metric_parley_exports(objects: dict[str, dict[str, Any]]) -> None:
    (metric,) = objects["HorizontalPodAutoscaler"]["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert name in (ROOT / "docs" / "metrics.md").read_text()
    assert name in (ROOT / "README.md").read_text()  # the prometheus-adapter rule


@pytest.mark.integration
def test_the_prometheus_rule_is_the_mixins_and_promtool_accepts_it(
    objects: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    require_tool("promtool")
    groups = objects["PrometheusRule"]["spec"]["groups"]
    on_disk = [
        group
        for path in sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
    ]
    assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in on_disk)
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    subprocess.run(["promtool", "check", "rules", str(rules)], check=True, capture_output=True)


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def _scrape_path(objects: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """The ServiceMonitor's endpoint, followed through the Service to the container port it
    reaches, and that container."""
    (endpoint,) = objects["ServiceMonitor"]["spec"]["endpoints"]
    (service_port,) = [
        p for p in objects["Service"]["spec"]["ports"] if p["name"] == endpoint["port"]
    ]
    (container,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    (container_port,) = [
        p["containerPort"] for p in container["ports"] if p["name"] == service_port["targetPort"]
    ]
    return endpoint, container_port, container


def test_the_service_monitor_scrapes_the_port_parley_serves_metrics_on(
    objects: dict[str, dict[str, Any]],
) -> None:
    endpoint, port, container = _scrape_path(objects)
    assert endpoint["path"] == "/metrics"
    # PARLEY_METRICS_PORT: /metrics is there and only there; no ingress routes to it.
    assert _env(container)["PARLEY_METRICS_PORT"]["value"] == str(port)
    service_labels = objects["Service"]["metadata"]["labels"]
    monitor = objects["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service_labels.items()
    # No token on either side in the base: a token on one side only was every scrape a 401.
    assert "PARLEY_METRICS_TOKEN" not in _env(container)
    assert "authorization" not in endpoint


@pytest.mark.integration  # kubectl, outside the module's built objects
def test_the_metrics_token_component_sets_both_sides_to_the_same_secret_key(
    tmp_path: Path,
) -> None:
    """The README's Secret had a metrics-token Parley read while the ServiceMonitor's
    authorization was commented out: every scrape a 401, ParleyTargetDown firing."""
    base = os.path.relpath(KUBERNETES, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [base], "components": [f"{base}/components/metrics-token"]})
    )
    built = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout
    objects = {doc["kind"]: doc for doc in yaml.safe_load_all(built)}
    endpoint, _, container = _scrape_path(objects)
    read = _env(container)["PARLEY_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]
    sent = endpoint["authorization"]
    assert sent["type"] == "Bearer"
    assert (sent["credentials"]["name"], sent["credentials"]["key"]) == (
        read["name"],
        read["key"],
    )
    assert not read.get("optional")  # a missing key is a pod that does not start, not a 401


def test_the_dashboard_config_map_carries_the_sidecar_label(
    objects: dict[str, dict[str, Any]],
) -> None:
    config_map = objects["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboards = ROOT / "deploy" / "grafana" / "dashboards"
    for name, text in config_map["data"].items():
        assert text == (dashboards / name).read_text()
