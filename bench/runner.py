"""Runs a benchmark scenario for each size and repetition, takes medians, saves the results.

A campaign repetition of size N runs, back to back on the same machine:
leadflow (full speed, then half load), the aiokafka baseline and the
confluent-kafka baseline. Ratios are taken within a repetition (the three
ran a minute apart, so machine noise hits them alike) and then their
median across repetitions; every other figure is the median across
repetitions. Each size's result goes to ``bench/results/<timestamp>-<scenario>-<N>.json``.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.pipeline import BenchServices, LeadflowRun, bench_services, run_baseline, run_leadflow
from bench.profile import summarize_collapsed
from bench.stats import median_results, ratio
from bench.sysinfo import machine

__all__ = ["RESULTS_DIR", "SCENARIOS", "BenchOptions", "run_bench", "summarize_campaign"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCENARIOS = ("campaign", "rate-limited", "rate-limited-campaign", "scheduler")
Progress = Callable[[str], None]


@dataclass
class BenchOptions:
    """What ``leadflow bench`` was asked to do."""

    sizes: list[int] = field(default_factory=lambda: [10_000])
    repeat: int = 1
    scenario: str = "campaign"
    baselines: bool = True
    half_load: bool = True
    baseline_processes: int = 1
    pending: int = 1_000_000
    profile_dir: Path | None = None
    results_dir: Path | None = RESULTS_DIR
    command: str = "leadflow bench"


def _stage_table(stages: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: {"p50_ms": s.get("p50_ms"), "p99_ms": s.get("p99_ms")} for name, s in stages.items()
    }


def _worst(stages: Mapping[str, Mapping[str, Any]], key: str) -> float | None:
    values = [s[key] for s in stages.values() if s.get(key) is not None]
    return max(values) if values else None


def summarize_campaign(
    full: Mapping[str, Any],
    half: Mapping[str, Any] | None,
    aio: Mapping[str, Any] | None,
    conf: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The figures of one campaign repetition, flat, with the keys the issue asks for.

    Latency figures (``p99_stage_latency_ms``: the worst stage's p99;
    ``p99_end_to_end_ms``: raw → first-touch sent) are from the half-load
    phase when there is one, else from the full-speed phase.
    """
    ours = full["throughput_leads_per_s"]
    latency = half if half is not None else full
    out: dict[str, Any] = {
        "leads": full["leads"],
        "throughput_leads_per_s": ours,
        "raw_to_first_sent_s": full["raw_to_first_sent_s"],
        "baseline_aiokafka_leads_per_s": aio["throughput_leads_per_s"] if aio else None,
        "baseline_confluent_leads_per_s": conf["throughput_leads_per_s"] if conf else None,
        "ratio_aiokafka": ratio(ours, aio["throughput_leads_per_s"] if aio else None),
        "ratio_confluent": ratio(ours, conf["throughput_leads_per_s"] if conf else None),
        "latency_measured_at": "half load" if half is not None else "full load",
        "half_load_rate_leads_per_s": half["rate_target"] if half is not None else None,
        "p50_stage_latency_ms": _worst(latency["stages"], "p50_ms"),
        "p99_stage_latency_ms": _worst(latency["stages"], "p99_ms"),
        "p50_end_to_end_ms": latency["end_to_end"]["p50_ms"],
        "p99_end_to_end_ms": latency["end_to_end"]["p99_ms"],
        "stage_latency_ms": _stage_table(latency["stages"]),
        "stage_latency_full_load_ms": _stage_table(full["stages"]),
        "end_to_end_full_load_ms": {
            "p50_ms": full["end_to_end"]["p50_ms"],
            "p99_ms": full["end_to_end"]["p99_ms"],
        },
        "peak_rss_worker_mb": full["peak_rss_mb"]["worker"],
        "peak_rss_sim_mb": full["peak_rss_mb"]["sim"],
        "peak_rss_broker_mb": full["peak_rss_mb"]["broker"],
        "cpu_s": dict(full["cpu_s"]),
        "worker_cpu_ms_per_lead": None
        if full["cpu_s"].get("worker") is None
        else round(full["cpu_s"]["worker"] * 1000 / full["leads"], 3),
        "worker_rss_growth_mb": full["worker_rss_growth_mb"],
        "worker_rss_growth_kb_per_lead": full["worker_rss_growth_kb_per_lead"],
        "sent": full["sent"],
        "value_bytes": dict(full["value_bytes"]),
    }
    if half is not None:
        out["peak_rss_worker_mb"] = max(
            out["peak_rss_worker_mb"] or 0.0, half["peak_rss_mb"]["worker"] or 0.0
        )
    for name, base in (("aiokafka", aio), ("confluent", conf)):
        if base is None:
            continue
        out[f"baseline_{name}"] = {
            "throughput_leads_per_s": base["throughput_leads_per_s"],
            "raw_to_first_sent_s": base["raw_to_first_sent_s"],
            "processes": base.get("processes", 1),
            "hop_latency_ms": _stage_table(base["stages"]),
            "end_to_end_ms": {
                "p50_ms": base["end_to_end"]["p50_ms"],
                "p99_ms": base["end_to_end"]["p99_ms"],
            },
            "cpu_s": dict(base["cpu_s"]),
            "cpu_ms_per_lead": None
            if base["cpu_s"].get("process") is None
            else round(base["cpu_s"]["process"] * 1000 / base["leads"], 3),
            "peak_rss_mb": base["peak_rss_mb"].get("process"),
            "value_bytes": dict(base["value_bytes"]),
        }
    return out


async def _campaign_repetition(
    services: BenchServices, n: int, rep: int, opts: BenchOptions, progress: Progress
) -> tuple[dict[str, Any], dict[str, Any]]:
    progress(f"[{n} leads, run {rep + 1}/{opts.repeat}] leadflow")
    lf = await run_leadflow(services, LeadflowRun(n, half_load=opts.half_load))
    aio = conf = None
    if opts.baselines:
        progress(f"[{n} leads, run {rep + 1}/{opts.repeat}] aiokafka baseline")
        aio = await run_baseline(services, "aiokafka", n, processes=opts.baseline_processes)
        progress(f"[{n} leads, run {rep + 1}/{opts.repeat}] confluent-kafka baseline")
        conf = await run_baseline(services, "confluent", n, processes=opts.baseline_processes)
    summary = summarize_campaign(lf["full"], lf.get("half"), aio, conf)
    progress(
        f"  leadflow {summary['throughput_leads_per_s']} leads/s, "
        f"aiokafka {summary['baseline_aiokafka_leads_per_s']}, "
        f"confluent {summary['baseline_confluent_leads_per_s']}"
    )
    return summary, {"leadflow": lf, "aiokafka": aio, "confluent": conf}


async def _profile(
    services: BenchServices, n: int, folder: Path, progress: Progress
) -> dict[str, Any]:
    """An extra full-speed run under py-spy (not one of the measured repetitions)."""
    path = folder / f"worker-{n}.txt"
    progress(f"[{n} leads] profiling the worker with py-spy (not counted)")
    lf = await run_leadflow(services, LeadflowRun(n, half_load=False, profile=path))
    top = summarize_collapsed(path)
    path.with_suffix(".top.txt").write_text(top.text())
    return {
        "file": path.name,
        "throughput_leads_per_s_under_profiler": lf["full"]["throughput_leads_per_s"],
        "worker_cpu_s": lf["full"]["cpu_s"]["worker"],
        **top.as_dict(limit=15),
    }


def _save(opts: BenchOptions, scenario: str, n: int, result: Mapping[str, Any]) -> Path | None:
    if opts.results_dir is None:
        return None
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = opts.results_dir / f"{stamp}-{scenario}-{n}.json"
    path.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    return path


async def run_bench(opts: BenchOptions, progress: Progress = lambda _: None) -> dict[str, Any]:
    """Run ``opts``; returns the JSON object ``leadflow bench --json`` prints.

    Top-level keys are the figures of the largest size; ``sizes`` lists every size's.
    """
    info = machine()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    per_size: list[dict[str, Any]] = []
    with bench_services() as services:
        progress(f"bench database {services.dsn.rsplit('/', 1)[-1]}; files in {services.workdir}")
        for n in opts.sizes if opts.scenario == "campaign" else opts.sizes[:1]:
            reps: list[dict[str, Any]] = []
            details: list[dict[str, Any]] = []
            for rep in range(opts.repeat):
                if opts.scenario == "campaign":
                    summary, detail = await _campaign_repetition(services, n, rep, opts, progress)
                elif opts.scenario.startswith("rate-limited"):
                    from bench.scenarios import rate_limited

                    by = "campaign" if opts.scenario.endswith("campaign") else "provider"
                    progress(f"[{opts.scenario}, {n} leads, run {rep + 1}/{opts.repeat}]")
                    summary, detail = await rate_limited(services, n, limit_by=by), {}
                else:
                    from bench.scenarios import scheduler

                    progress(f"[scheduler, {opts.pending} pending, run {rep + 1}/{opts.repeat}]")
                    summary, detail = await scheduler(services, opts.pending), {}
                reps.append(summary)
                details.append(detail)
            merged = median_results(reps)
            merged.update({"scenario": opts.scenario, "repeats": opts.repeat})
            if opts.profile_dir is not None and opts.scenario == "campaign":
                merged["profile"] = await _profile(services, n, opts.profile_dir, progress)
            size = n if opts.scenario != "scheduler" else opts.pending
            result = {
                "summary": merged,
                "repetitions": reps,
                "runs": details,
                "machine": info,
                "command": opts.command,
                "started_at": started,
                "python": platform.python_version(),
            }
            path = _save(opts, opts.scenario, size, result)
            if path is not None:
                merged["results_file"] = str(path)
            per_size.append(merged)
    out = dict(per_size[-1])
    if len(per_size) > 1:
        out["sizes"] = per_size
    return out
