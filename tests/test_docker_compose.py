"""docker-compose.yml parses and agrees with leadflow's own settings.

No Docker engine runs here, so this checks the file instead of running it.
"""

from __future__ import annotations

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
