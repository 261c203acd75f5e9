"""docker-compose.yml parses and agrees with leadflow's own settings.

No Docker engine runs here, so this checks the file instead of running it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from streams.commands.config import all_settings_rows
from streams.settings import REPO_ROOT, Settings


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _known_variables() -> set[str]:
    return {row[0] for _, rows in all_settings_rows() for row in rows}


def test_services_present() -> None:
    assert {"kafka", "postgres", "leadflow", "prometheus", "sim"} <= set(_compose()["services"])


def test_ports_match_local_defaults() -> None:
    defaults = Settings.from_env({})
    services = _compose()["services"]
    assert f"{defaults.kafka_port}:9092" in services["kafka"]["ports"]
    assert f"{defaults.pg_port}:5432" in services["postgres"]["ports"]
    assert f"{defaults.web_port}:{defaults.web_port}" in services["leadflow"]["ports"]
    assert services["leadflow"]["environment"]["LEADFLOW_WEB_PORT"] == str(defaults.web_port)


def test_every_leadflow_variable_is_one_leadflow_reads() -> None:
    known = _known_variables()
    for name, service in _compose()["services"].items():
        for var in service.get("environment", {}) or {}:
            if var.startswith("LEADFLOW_"):
                assert var in known, f"service {name} sets {var}, which leadflow does not read"


def test_worker_waits_for_healthy_dependencies() -> None:
    services = _compose()["services"]
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["kafka"]
    deps = services["leadflow"]["depends_on"]
    assert deps["postgres"]["condition"] == "service_healthy"
    assert deps["kafka"]["condition"] == "service_healthy"


def test_kafka_is_single_node_kraft() -> None:
    env = _compose()["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert _compose()["services"]["kafka"]["image"].startswith("apache/kafka:")
    from streams.infra.kafka import kafka_version

    assert _compose()["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version()}"


def test_prometheus_scrapes_the_worker() -> None:
    prom = yaml.safe_load((REPO_ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    ]
    assert f"leadflow:{Settings.from_env({}).web_port}" in targets
    assert prom["scrape_configs"][0]["metrics_path"] == "/metrics"


# --- metrics: Prometheus rules, Grafana provisioning, the dashboard -------------------------

GRAFANA = REPO_ROOT / "infra" / "grafana"
_SERIES = re.compile(r"\bleadflow_[a-z0-9_]+\b")


def _yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def _mounts(service: str) -> dict[str, Path]:
    """Container path -> host file or directory, for the service's bind mounts."""
    out = {}
    for volume in _compose()["services"][service].get("volumes", []):
        host, container = volume.split(":")[:2]
        out[container] = (REPO_ROOT / host).resolve()
    return out


def _exported_series() -> set[str]:
    """Every series name leadflow's /metrics can carry."""
    from streams import metrics

    names = set()
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count", "created")}
        else:
            names.add(family.name)
    return names


def _dashboard() -> dict[str, Any]:
    data = json.loads((GRAFANA / "leadflow-dashboard.json").read_text())
    assert isinstance(data, dict)
    return data


def _dashboard_exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def test_prometheus_loads_the_alert_rules_it_is_given() -> None:
    prom = _yaml(REPO_ROOT / "infra" / "prometheus" / "prometheus.yml")
    mounts = _mounts("prometheus")
    assert mounts["/etc/prometheus/prometheus.yml"].name == "prometheus.yml"
    for rule_file in prom["rule_files"]:
        assert rule_file in mounts, f"{rule_file} is not mounted into the prometheus service"
        rules = _yaml(mounts[rule_file])
        alerts = [r for g in rules["groups"] for r in g["rules"]]
        assert alerts
        for alert in alerts:
            assert alert["alert"].startswith("Leadflow")
            assert alert["annotations"]["summary"]
            for name in _SERIES.findall(alert["expr"]):
                assert name in _exported_series(), f"{alert['alert']} uses unknown {name}"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    services = _compose()["services"]
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert "prometheus" in services["grafana"]["depends_on"]
    mounts = _mounts("grafana")
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA / "provisioning").resolve()
    source = _yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    [datasource] = source["datasources"]
    prometheus_port = services["prometheus"]["ports"][0].split(":")[-1]
    assert datasource["url"] == f"http://prometheus:{prometheus_port}"
    provider = _yaml(GRAFANA / "provisioning" / "dashboards" / "leadflow.yml")
    [files] = provider["providers"]
    mounted = {
        path: host for path, host in mounts.items() if path.startswith(files["options"]["path"])
    }
    assert mounted == {
        f"{files['options']['path']}/leadflow-dashboard.json": (
            GRAFANA / "leadflow-dashboard.json"
        ).resolve()
    }
    # the dashboard's data-source variable defaults to the provisioned one
    [variable] = [v for v in _dashboard()["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] == datasource["uid"]


def test_dashboard_queries_only_exported_metrics() -> None:
    exprs = _dashboard_exprs()
    assert exprs
    for expr in exprs:
        names = _SERIES.findall(expr)
        assert names, f"panel query without a leadflow metric: {expr}"
        for name in names:
            assert name in _exported_series(), f"dashboard uses unknown {name}"


def test_dashboard_covers_every_metric_area() -> None:
    used = {name for expr in _dashboard_exprs() for name in _SERIES.findall(expr)}
    for family in (
        "leadflow_stage_records_total",
        "leadflow_consumer_lag_records",
        "leadflow_stage_event_latency_seconds_bucket",
        "leadflow_stage_processing_seconds_bucket",
        "leadflow_dead_letters_total",
        "leadflow_stage_errors_total",
        "leadflow_provider_calls_total",
        "leadflow_provider_rate_limited_total",
        "leadflow_provider_breaker_state",
        "leadflow_provider_quota_remaining",
        "leadflow_pending_touches",
        "leadflow_sink_flush_seconds_bucket",
        "leadflow_sink_backpressure_total",
        "leadflow_process_resident_memory_bytes",
        "leadflow_campaign_completion_ratio",
        "leadflow_campaign_cost_units",
    ):
        assert family in used, f"no dashboard panel shows {family}"
    ids = [p["id"] for p in _dashboard()["panels"]]
    assert len(ids) == len(set(ids))
