"""docker-compose's `monitoring` profile is wired: Prometheus scrapes each process's own metrics
port, evaluates the alert rules, and Grafana gets its data source and the dashboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))


def services() -> dict[str, Any]:
    return dict(load("docker-compose.yml")["services"])


def test_prometheus_scrapes_every_compose_process_on_its_own_metrics_port():
    with_metrics = {
        name: spec["environment"]
        for name, spec in services().items()
        if "VAMU_METRICS_PORT" in (spec.get("environment") or {})
    }
    scrape = load("deploy/prometheus/prometheus.yml")["scrape_configs"]
    targets = {t for job in scrape for config in job["static_configs"] for t in config["targets"]}

    assert set(with_metrics) == {"worker-llm", "worker-notify", "bridge"}
    assert targets == {f"{name}:{env['VAMU_METRICS_PORT']}" for name, env in with_metrics.items()}
    assert len({env["VAMU_METRICS_PORT"] for env in with_metrics.values()}) == 3
    for env in with_metrics.values():
        # Reachable from the Prometheus container; the port is not published on the host.
        assert env["VAMU_METRICS_ADDRESS"] == "0.0.0.0"
        # The metrics port comes on top of the shared settings, not instead of them.
        assert env["VAMU_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert [job["job_name"] for job in scrape] == ["vamu-tasks"]  # what the rules' `up` uses


def test_prometheus_and_grafana_run_only_in_the_monitoring_profile_on_loopback():
    all_services = services()

    for name in ("prometheus", "grafana"):
        assert all_services[name]["profiles"] == ["monitoring"]
        assert all(port.startswith("127.0.0.1:") for port in all_services[name]["ports"])
    assert "alerts.yml" in load("deploy/prometheus/prometheus.yml")["rule_files"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in all_services["prometheus"]["volumes"]


def test_grafana_has_no_default_password_and_loads_the_dashboard_from_the_repository():
    grafana = services()["grafana"]
    datasource = load("deploy/grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    provider = load("deploy/grafana/provisioning/dashboards/vamu-tasks.yml")["providers"][0]
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/vamu-tasks.json").read_text())

    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    assert "exit 1" in grafana["entrypoint"][-1]  # refuses to start without one
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    assert datasource["url"] == "http://prometheus:9090"
    assert dashboard["templating"]["list"][0]["query"] == datasource["type"]
