"""Summaries of a campaign run, the Markdown report and the plot, from synthetic results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import latest_results, render_markdown, write_report
from bench.runner import summarize_campaign


def _phase(
    tp: float, stage_p99: float, e2e_p99: float, rate: float | None = None
) -> dict[str, Any]:
    stage = {"count": 10, "p50_ms": stage_p99 / 2, "p99_ms": stage_p99, "max_ms": stage_p99}
    return {
        "leads": 10_000,
        "sent": 10_000,
        "throughput_leads_per_s": tp,
        "raw_to_first_sent_s": 10_000 / tp,
        "stages": {
            "enrich": stage,
            "score": {**stage, "p99_ms": 5.0},
            "schedule": stage,
            "send": stage,
        },
        "end_to_end": {"count": 10, "p50_ms": e2e_p99 / 2, "p99_ms": e2e_p99, "max_ms": e2e_p99},
        "peak_rss_mb": {"worker": 120.0, "sim": 50.0, "broker": 600.0, "process": 60.0},
        "cpu_s": {"worker": 20.0, "sim": 1.0, "broker": 5.0, "process": 2.0},
        "worker_rss_growth_mb": 10.0,
        "worker_rss_growth_kb_per_lead": 1.024,
        "value_bytes": {"raw": 160.0},
        "rate_target": rate,
    }


def _summary() -> dict[str, Any]:
    return summarize_campaign(
        _phase(2500.0, 40.0, 400.0),
        _phase(1250.0, 20.0, 200.0, rate=1250.0),
        _phase(5000.0, 10.0, 100.0),
        _phase(10_000.0, 8.0, 80.0),
    )


def test_summary_has_the_issue_keys_ratios_and_half_load_latency() -> None:
    s = _summary()
    assert s["throughput_leads_per_s"] == 2500.0
    assert s["ratio_aiokafka"] == 0.5
    assert s["ratio_confluent"] == 0.25
    # latency targets come from the half-load phase; the worst stage counts
    assert s["latency_measured_at"] == "half load"
    assert s["p99_stage_latency_ms"] == 20.0
    assert s["p99_end_to_end_ms"] == 200.0
    assert s["end_to_end_full_load_ms"]["p99_ms"] == 400.0
    assert s["peak_rss_worker_mb"] == 120.0
    assert s["worker_cpu_ms_per_lead"] == 2.0
    assert s["baseline_aiokafka"]["cpu_ms_per_lead"] == 0.2


def test_summary_without_half_load_or_baselines() -> None:
    s = summarize_campaign(_phase(100.0, 30.0, 300.0), None, None, None)
    assert s["latency_measured_at"] == "full load"
    assert s["p99_stage_latency_ms"] == 30.0
    assert s["ratio_aiokafka"] is None and s["baseline_confluent_leads_per_s"] is None


def _write(folder: Path, name: str, summary: dict[str, Any]) -> None:
    data = {
        "summary": {**summary, "repeats": 3},
        "machine": {"cpu": "Test CPU", "cpus": 2, "memory_gb": 24.0, "kafka": "4.1.1"},
        "command": "leadflow bench --leads 10000 --repeat 3 --json",
        "started_at": name[:16],
    }
    (folder / name).write_text(json.dumps(data))


def test_report_uses_the_newest_result_and_judges_targets(tmp_path: Path) -> None:
    results, docs = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    docs.mkdir()
    old = {**_summary(), "throughput_leads_per_s": 1.0}
    _write(results, "20260101T000000Z-campaign-10000.json", old)
    _write(results, "20260102T000000Z-campaign-10000.json", _summary())
    _write(
        results,
        "20260102T000000Z-scheduler-1000000.json",
        {
            "pending_touches": 1_000_000,
            "copy_s": 9.5,
            "due_stream": 6000,
            "due_stream_s": 60.0,
            "due_to_emit_ms": {"count": 6000, "p50_ms": 100.0, "p99_ms": 250.0, "max_ms": 300.0},
            "p99_due_to_emit_ms": 250.0,
            "idle_window_s": 30.0,
            "idle_cpu_worker_pct_of_core": 3.5,
            "idle_cpu_postgres_pct_of_core": 1.0,
        },
    )
    found = latest_results(results)
    assert found[("campaign", 10_000)]["summary"]["throughput_leads_per_s"] == 2500.0
    md = render_markdown(found)
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "2,500 leads/s" in rows["end-to-end throughput"]
    assert rows["end-to-end throughput"].endswith("**fail** |")
    assert rows["ratio to the aiokafka four-hop baseline"].endswith("**pass** |")
    assert rows["ratio to the confluent-kafka four-hop baseline"].endswith("**pass** |")
    assert rows["per-stage latency at half load"].endswith("**pass** |")
    assert rows["raw → sent latency at half load"].endswith("**pass** |")
    assert "not run" in rows["100,000-lead campaign, `raw` to first touch `sent`"]
    assert rows["scheduler, 1,000,000 pending touches"].endswith("**fail** |")  # idle CPU 3.5 %
    assert "Test CPU (2 cores" in md
    assert "leadflow bench --leads 10000 --repeat 3 --json" in md
    written = write_report(results, docs)
    assert [p.name for p in written] == ["BENCHMARKS.md", "benchmarks.png"]
    assert (docs / "benchmarks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
