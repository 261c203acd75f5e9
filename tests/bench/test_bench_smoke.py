"""Smoke run of ``leadflow bench --leads 500 --json`` on the real broker and Postgres."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.commands.bench import bench
from tests.conftest import Services

REQUIRED = (
    "throughput_leads_per_s",
    "baseline_aiokafka_leads_per_s",
    "baseline_confluent_leads_per_s",
    "ratio_aiokafka",
    "ratio_confluent",
    "p99_stage_latency_ms",
    "p99_end_to_end_ms",
    "peak_rss_worker_mb",
    "p50_stage_latency_ms",
    "p50_end_to_end_ms",
    "raw_to_first_sent_s",
    "peak_rss_sim_mb",
    "peak_rss_broker_mb",
)


def test_bench_500_leads_prints_the_figures(services: Services, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        bench, ["--leads", "500", "--json", "--results-dir", str(tmp_path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    for key in REQUIRED:
        assert isinstance(data[key], int | float), key
        assert data[key] > 0, key
    assert data["sent"] == 500
    ours = data["throughput_leads_per_s"]
    assert data["ratio_aiokafka"] == pytest.approx(
        ours / data["baseline_aiokafka_leads_per_s"], 0.01
    )
    assert data["ratio_confluent"] == pytest.approx(
        ours / data["baseline_confluent_leads_per_s"], 0.01
    )
    assert set(data["stage_latency_ms"]) == {"enrich", "score", "schedule", "send"}
    assert data["cpu_s"]["worker"] > 0
    saved = list(tmp_path.glob("*-campaign-500.json"))
    assert len(saved) == 1
    assert json.loads(saved[0].read_text())["summary"]["leads"] == 500
