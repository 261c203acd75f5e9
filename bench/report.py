"""``docs/BENCHMARKS.md`` and ``docs/benchmarks.png`` from the saved results in ``bench/results/``.

For each scenario and size the newest result file is used. Hand-written
analysis (the profile's story, what the targets would need) lives in
``bench/NOTES.md`` and is copied in under "Notes", so regenerating the
report never loses it. Run ``leadflow bench --report`` or
``python -m bench.report``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "Target", "latest_results", "render_markdown", "write_plot", "write_report"]

BENCH_DIR = Path(__file__).resolve().parent
DOCS_DIR = BENCH_DIR.parent / "docs"
NOTES = BENCH_DIR / "NOTES.md"

Result = dict[str, Any]


def latest_results(folder: Path) -> dict[tuple[str, int], Result]:
    """The newest result per (scenario, size); file names start with a UTC timestamp."""
    out: dict[tuple[str, int], Result] = {}
    for path in sorted(folder.glob("*.json")):
        stem = path.stem.split("-", 1)
        if len(stem) != 2:
            continue
        scenario, _, size = stem[1].rpartition("-")
        if not size.isdigit():
            continue
        data = json.loads(path.read_text())
        data["file"] = path.name
        out[(scenario, int(size))] = data  # sorted by name: the newest wins
    return out


def _fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


class Target:
    """One row of the issue's targets table."""

    def __init__(
        self,
        figure: str,
        target: str,
        measure: Callable[[dict[tuple[str, int], Result]], tuple[str, bool | None]],
    ) -> None:
        self.figure = figure
        self.target = target
        self.measure = measure


def _campaign(results: Mapping[tuple[str, int], Result], size: int | None = None) -> Result | None:
    sizes = sorted(n for s, n in results if s == "campaign")
    if not sizes:
        return None
    if size is None:
        size = sizes[-1]
    result = results.get(("campaign", size))
    return None if result is None else dict(result["summary"])


def _scenario(results: Mapping[tuple[str, int], Result], name: str) -> Result | None:
    found = [r for (s, _), r in sorted(results.items()) if s == name]
    return dict(found[-1]["summary"]) if found else None


def _t_throughput(results: Mapping[tuple[str, int], Result]) -> tuple[str, bool | None]:
    c = _campaign(results)
    if c is None:
        return "not run", None
    v = c["throughput_leads_per_s"]
    return f"{_fmt(v)} leads/s ({int(c['leads']):,} leads)", v is not None and v >= 5000


def _t_ratio(key: str, bound: float) -> Callable[[Mapping[tuple[str, int], Result]], Any]:
    def measure(results: Mapping[tuple[str, int], Result]) -> tuple[str, bool | None]:
        c = _campaign(results)
        if c is None or c.get(key) is None:
            return "not run", None
        return f"{c[key]:.2f} ({int(c['leads']):,} leads)", c[key] >= bound

    return measure


def _t_span(size: int, bound: float) -> Callable[[Mapping[tuple[str, int], Result]], Any]:
    def measure(results: Mapping[tuple[str, int], Result]) -> tuple[str, bool | None]:
        c = _campaign(results, size)
        if c is None:
            return "not run", None
        v = c["raw_to_first_sent_s"]
        return f"{_fmt(v, 1)} s", v is not None and v <= bound

    return measure


def _t_latency(key: str, bound: float) -> Callable[[Mapping[tuple[str, int], Result]], Any]:
    def measure(results: Mapping[tuple[str, int], Result]) -> tuple[str, bool | None]:
        c = _campaign(results)
        if c is None or c.get(key) is None:
            return "not run", None
        worst = ""
        if key == "p99_stage_latency_ms":
            stages = c.get("stage_latency_ms", {})
            if stages:
                name = max(stages, key=lambda s: stages[s].get("p99_ms") or 0)
                worst = f", worst stage: {name}"
        return f"{_fmt(c[key])} ms ({int(c['leads']):,} leads{worst})", c[key] <= bound

    return measure


def _t_memory(results: Mapping[tuple[str, int], Result]) -> tuple[str, bool | None]:
    c = _campaign(results)
    if c is None:
        return "not run", None
    per_lead = c.get("worker_rss_growth_kb_per_lead")
    big = _campaign(results, 100_000)
    growth = _fmt(c["worker_rss_growth_mb"], 1)
    text = f"{_fmt(per_lead, 2)} KB/lead ({int(c['leads']):,} leads, +{growth} MB)"
    ok = per_lead is not None and per_lead <= 2
    if big is not None:
        text += f"; 100,000 leads: +{_fmt(big['worker_rss_growth_mb'], 1)} MB"
        ok = ok and (big["worker_rss_growth_mb"] or 0) <= 200
    return text, ok


def _t_rate(scenario: str) -> Callable[[Mapping[tuple[str, int], Result]], Any]:
    def measure(results: Mapping[tuple[str, int], Result]) -> tuple[str, bool | None]:
        r = _scenario(results, scenario)
        if r is None:
            return f"not run (`leadflow bench --scenario {scenario}`)", None
        share = r["achieved_ratio_to_limit"]
        text = (
            f"{r['achieved_per_window']:.1f} per window of limit {_fmt(r['limit_per_window'])} "
            f"({share * 100:.1f} %); max in any window {_fmt(r['max_in_any_window'])}"
        )
        return text, 0.98 <= share <= 1.0 and r["max_in_any_window"] <= r["limit_per_window"]

    return measure


def _t_scheduler(results: Mapping[tuple[str, int], Result]) -> tuple[str, bool | None]:
    r = _scenario(results, "scheduler")
    if r is None:
        return "not run (`leadflow bench --scenario scheduler`)", None
    p99 = r["p99_due_to_emit_ms"]
    idle = r["idle_cpu_worker_pct_of_core"]
    text = f"p99 {_fmt(p99)} ms; idle CPU {_fmt(idle, 1)} % of a core"
    return text, p99 is not None and p99 <= 1000 and idle is not None and idle <= 2


TARGETS: tuple[Target, ...] = (
    Target("end-to-end throughput", "≥ 5,000 leads/s", _t_throughput),
    Target("ratio to the aiokafka four-hop baseline", "≥ 0.40", _t_ratio("ratio_aiokafka", 0.40)),
    Target(
        "ratio to the confluent-kafka four-hop baseline",
        "≥ 0.25",
        _t_ratio("ratio_confluent", 0.25),
    ),
    Target("10,000-lead campaign, `raw` to first touch `sent`", "≤ 5 s", _t_span(10_000, 5)),
    Target("100,000-lead campaign, `raw` to first touch `sent`", "≤ 30 s", _t_span(100_000, 30)),
    Target("per-stage latency at half load", "p99 ≤ 25 ms", _t_latency("p99_stage_latency_ms", 25)),
    Target("raw → sent latency at half load", "p99 ≤ 250 ms", _t_latency("p99_end_to_end_ms", 250)),
    Target(
        "worker memory growth",
        "≤ 2 KB per lead in flight or pending; 100,000 leads add ≤ 200 MB",
        _t_memory,
    ),
    Target(
        "rate-limited send rate (SMS provider limit)",
        "within 2 % of the limit, never above it in any window",
        _t_rate("rate-limited"),
    ),
    Target(
        "rate-limited send rate (the campaign's own SMS rate, campaign clock)",
        "within 2 % of the limit, never above it in any window",
        _t_rate("rate-limited-campaign"),
    ),
    Target(
        "scheduler, 1,000,000 pending touches",
        "due-to-emit p99 ≤ 1 s; idle CPU ≤ 2 % of a core",
        _t_scheduler,
    ),
)


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("**pass**" if ok else "**fail**")


def _machine_lines(info: Mapping[str, Any]) -> list[str]:
    return [
        "| | |",
        "|---|---|",
        f"| CPU | {info.get('cpu')} ({info.get('cpus')} cores, {info.get('cpu_mhz')} MHz) |",
        f"| memory | {info.get('memory_gb')} GB |",
        f"| OS | {info.get('os')}, kernel {info.get('kernel')} |",
        f"| Python | {info.get('python')} |",
        f"| Kafka | {info.get('kafka')} (one KRaft broker on the same machine, 512 MiB heap) |",
        "| Postgres | 15, on the same machine |",
    ]


def _campaign_tables(campaigns: Sequence[Result]) -> list[str]:
    lines = [
        "| leads | leadflow leads/s | aiokafka leads/s | confluent leads/s | ratio aiokafka "
        "| ratio confluent | raw → last first touch | worker CPU / lead | worker peak RSS "
        "| runs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in campaigns:
        s = r["summary"]
        lines.append(
            f"| {int(s['leads']):,} | {_fmt(s['throughput_leads_per_s'])} "
            f"| {_fmt(s['baseline_aiokafka_leads_per_s'])} "
            f"| {_fmt(s['baseline_confluent_leads_per_s'])} "
            f"| {_fmt(s['ratio_aiokafka'], 2)} | {_fmt(s['ratio_confluent'], 2)} "
            f"| {_fmt(s['raw_to_first_sent_s'], 2)} s "
            f"| {_fmt(s['worker_cpu_ms_per_lead'], 2)} ms "
            f"| {_fmt(s['peak_rss_worker_mb'], 0)} MB | {s.get('repeats', 1)} |"
        )
    lines += [
        "",
        "Latency, from Kafka record create times (ms). *Half load*: a second campaign of "
        "the same size, produced at half the full-speed throughput.",
        "",
        "| leads | half-load rate | worst stage p50 / p99 | raw → sent p50 / p99 (half load) "
        "| raw → sent p50 / p99 (full speed) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in campaigns:
        s = r["summary"]
        full = s.get("end_to_end_full_load_ms", {})
        lines.append(
            f"| {int(s['leads']):,} | {_fmt(s.get('half_load_rate_leads_per_s'))} leads/s "
            f"| {_fmt(s['p50_stage_latency_ms'])} / {_fmt(s['p99_stage_latency_ms'])} "
            f"| {_fmt(s['p50_end_to_end_ms'])} / {_fmt(s['p99_end_to_end_ms'])} "
            f"| {_fmt(full.get('p50_ms'))} / {_fmt(full.get('p99_ms'))} |"
        )
    return lines


def _stage_detail(r: Result) -> list[str]:
    s = r["summary"]
    half = s.get("stage_latency_ms", {})
    full = s.get("stage_latency_full_load_ms", {})
    aio = s.get("baseline_aiokafka", {}).get("hop_latency_ms", {})
    conf = s.get("baseline_confluent", {}).get("hop_latency_ms", {})
    lines = [
        f"Per stage, {int(s['leads']):,} leads (ms, p50 / p99). Baseline hops are at full speed.",
        "",
        "| stage (hop) | leadflow, half load | leadflow, full speed | aiokafka hop | "
        "confluent-kafka hop |",
        "|---|---:|---:|---:|---:|",
    ]
    for stage in ("enrich", "score", "schedule", "send"):

        def pair(table: Mapping[str, Any], stage: str = stage) -> str:
            row = table.get(stage, {})
            return f"{_fmt(row.get('p50_ms'))} / {_fmt(row.get('p99_ms'))}"

        lines.append(f"| {stage} | {pair(half)} | {pair(full)} | {pair(aio)} | {pair(conf)} |")
    cpu = s.get("cpu_s", {})
    lines += [
        "",
        f"CPU seconds during the full-speed phase: worker {_fmt(cpu.get('worker'), 2)}, "
        f"simulator {_fmt(cpu.get('sim'), 2)}, broker {_fmt(cpu.get('broker'), 2)}, "
        f"Postgres (the benchmark database's backends) {_fmt(cpu.get('postgres'), 2)}. "
        f"Baselines: aiokafka process "
        f"{_fmt(s.get('baseline_aiokafka', {}).get('cpu_s', {}).get('process'), 2)} "
        f"({_fmt(s.get('baseline_aiokafka', {}).get('cpu_ms_per_lead'), 3)} ms per lead), "
        f"confluent-kafka process "
        f"{_fmt(s.get('baseline_confluent', {}).get('cpu_s', {}).get('process'), 2)} "
        f"({_fmt(s.get('baseline_confluent', {}).get('cpu_ms_per_lead'), 3)} ms per lead).",
        "",
        f"Peak RSS: worker {_fmt(s.get('peak_rss_worker_mb'))} MB "
        f"(+{_fmt(s.get('worker_rss_growth_mb'), 1)} MB over the run, "
        f"{_fmt(s.get('worker_rss_growth_kb_per_lead'), 2)} KB per lead), simulator "
        f"{_fmt(s.get('peak_rss_sim_mb'))} MB, broker {_fmt(s.get('peak_rss_broker_mb'))} MB.",
        "",
        "Mean value sizes (bytes), leadflow vs baseline: "
        + ", ".join(
            f"{t} {_fmt(v)} / {_fmt(s.get('baseline_aiokafka', {}).get('value_bytes', {}).get(t))}"
            for t, v in s.get("value_bytes", {}).items()
        )
        + ".",
    ]
    return lines


def _rate_lines(r: Result | None, scenario: str) -> list[str]:
    if r is None:
        return [f"Not run yet: `leadflow bench --scenario {scenario}`."]
    s = r["summary"]
    mem = s.get("worker_rss_throttled_phase_mb", {})
    return [
        f"**{scenario}**: {int(s['leads']):,} leads, first touch SMS, limit {s['sms_limit']}, "
        f"set as {s.get('limit_by', 'provider')}; clock ×{s['time_scale']:g}. "
        "From the simulator's arrival times:",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| SMS sent | {int(s['sms_sent']):,} |",
        f"| achieved rate per window | {s['achieved_per_window']:.2f} "
        f"({s['achieved_ratio_to_limit'] * 100:.1f} % of {_fmt(s['limit_per_window'])}) |",
        f"| most in any window | {_fmt(s['max_in_any_window'])} |",
        f"| send phase | {_fmt(s['send_phase_s'], 1)} s |",
        f"| worker RSS over the throttled phase | first {_fmt(mem.get('first'))} MB, "
        f"last {_fmt(mem.get('last'))} MB, max {_fmt(mem.get('max'))} MB; slope "
        f"{_fmt(s['worker_rss_slope_mb_per_min'], 2)} MB/min |",
        f"| second campaign (voice, {int(s['other_campaign_leads']):,} leads) alone "
        f"| {_fmt(s['other_alone_leads_per_s'])} leads/s |",
        f"| … beside the throttled campaign | {_fmt(s['other_beside_throttled_leads_per_s'])} "
        f"leads/s (ratio {_fmt(s['other_throughput_ratio'], 2)}) |",
    ]


def _scheduler_lines(r: Result | None) -> list[str]:
    if r is None:
        return ["Not run yet: `leadflow bench --scenario scheduler`."]
    s = r["summary"]
    d = s["due_to_emit_ms"]
    return [
        f"{int(s['pending_touches']):,} pending touches written with COPY in {s['copy_s']} s, due "
        "over the next 30 days; then "
        f"{int(s['due_stream']):,} touches coming due evenly over {s['due_stream_s']:g} s "
        "(clock at real speed).",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| due → emitted p50 / p99 / max | {_fmt(d['p50_ms'])} / {_fmt(d['p99_ms'])} / "
        f"{_fmt(d['max_ms'])} ms |",
        f"| worker CPU while nothing is due ({s['idle_window_s']:g} s) "
        f"| {_fmt(s['idle_cpu_worker_pct_of_core'], 2)} % of a core |",
        f"| Postgres CPU meanwhile | {_fmt(s['idle_cpu_postgres_pct_of_core'], 2)} % of a core |",
    ]


def _profile_lines(campaigns: Sequence[Result]) -> list[str]:
    for r in reversed(campaigns):
        prof = r["summary"].get("profile")
        if not prof:
            continue
        lines = [
            f"py-spy, worker process, full-speed phase of the {int(r['summary']['leads']):,}-lead "
            f"run ({prof['samples']:,} samples at 100 Hz, taken only while a thread held "
            "the GIL (`py-spy record --gil`): where the worker's Python CPU time goes).",
            "",
            "| inclusive % | function |",
            "|---:|---|",
        ]
        lines += [f"| {pct} | `{name}` |" for name, pct in prof["top_inclusive_pct"]]
        lines += ["", "| self % | function |", "|---:|---|"]
        lines += [f"| {pct} | `{name}` |" for name, pct in prof["top_self_pct"]]
        return lines
    return ["No profile saved yet: `leadflow bench --leads 10000 --profile DIR`."]


def render_markdown(results: Mapping[tuple[str, int], Result]) -> str:
    """The whole of docs/BENCHMARKS.md."""
    campaigns = [r for (s, _), r in sorted(results.items()) if s == "campaign"]
    newest = max(results.values(), key=lambda r: r.get("started_at", ""), default=None)
    info = newest["machine"] if newest else {}
    commands = sorted({r.get("command", "") for r in results.values() if r.get("command")})
    lines = [
        "# Benchmarks",
        "",
        "Generated by `leadflow bench --report` from the newest result per scenario and size "
        "in `bench/results/`. What is measured and how: [Method](#method).",
        "",
        "## Machine",
        "",
        *_machine_lines(info),
        "",
        "## Commands",
        "",
        "```sh",
        *(commands or ["leadflow bench --leads 500,2000,10000 --repeat 3 --json"]),
        "leadflow bench --report   # this page and docs/benchmarks.png",
        "```",
        "",
        "## Targets",
        "",
        "The issue's targets (2-core machine, broker on the same machine, at-least-once with "
        "idempotent effects), against the measurements below.",
        "",
        "| figure | target | measured | |",
        "|---|---|---|---|",
    ]
    for target in TARGETS:
        text, ok = target.measure(dict(results))
        lines.append(f"| {target.figure} | {target.target} | {text} | {_verdict(ok)} |")
    lines += ["", "## Campaigns against the baselines", ""]
    if campaigns:
        lines += _campaign_tables(campaigns)
        lines += ["", "![throughput and latency across sizes](benchmarks.png)", ""]
        lines += _stage_detail(campaigns[-1])
    else:
        lines.append("Not run yet.")
    lines += ["", "## Rate-limited scenario", ""]
    for scenario in ("rate-limited", "rate-limited-campaign"):
        found = next((r for (s, _), r in results.items() if s == scenario), None)
        lines += [*_rate_lines(found, scenario), ""]
    lines += ["", "## Scheduler scenario", ""]
    lines += _scheduler_lines(next((r for (s, _), r in results.items() if s == "scheduler"), None))
    lines += ["", "## Profile", ""]
    lines += _profile_lines(campaigns)
    if NOTES.exists():
        lines += ["", "## Notes", "", NOTES.read_text().strip()]
    lines += ["", "## Method", "", METHOD.strip(), ""]
    return "\n".join(lines)


METHOD = """
- **leadflow run.** `leadflow sim` (no latency, no errors, no rate limit, no webhooks:
  `bench/sim.yaml`) and one `leadflow worker`, every provider limit off
  (`LEADFLOW_*_RATE=0`), enrichment batched as in production (100 leads per request).
  The campaign is `bench/campaign.yaml`: the example's sequence, touch 1 an immediate
  SMS, qualification threshold 0 so every lead takes all four hops. The campaign clock
  starts on a Monday at 17:00 UTC (every generated lead's zone is inside 08:00–21:00)
  and runs 10× (60× in the rate-limited scenario). Each run has its own topics (prefix
  `bench-…`, 8 partitions, deleted afterwards) and the whole benchmark its own database
  (with `LEADFLOW_DATABASE_URL` set it uses that one, resets its campaign clock, and
  cancels and purges its own campaigns at the end: never point it at a database that
  live workers serve).
- **Leads** come from `streams/leadgen.py` (no invalid rows, no duplicates) through
  `streams/ingest.py`'s `row_to_record`, encoded before the clock starts and produced with
  ingestion's librdkafka settings. 50 warm-up leads go through first and are not counted.
- **Throughput** = leads ÷ seconds from the first `raw` record's create time to the create
  time of the last lead's first-touch `sent` record. Small campaigns are dominated by the
  pipeline's fill-and-drain time, so throughput grows with size.
- **Latency** is computed after the run from record create times on `raw`, `enriched`,
  `scored`, `touch-due` and `sent` (touch 1) of each lead: no instrumentation. A stage's
  latency includes waiting in Kafka for the stage to fetch it. *Half load*: a second
  campaign of the same size in the same worker, produced at half the measured full-speed
  throughput; the p50/p99 figures of the targets come from it.
- **Memory and CPU**: `/proc/<pid>/status` (VmRSS sampled every 0.25 s, VmHWM) and
  `/proc/<pid>/stat` (utime + stime) of the worker, the simulator, the broker (its pid from
  `streams/infra`), and the sum over the Postgres backends serving the benchmark database,
  during the measured phase.
- **Baselines** (`bench/baseline.py`): consume → decode → transform → encode → produce over
  the same four hops, topics, partition count, codec (`streams/codec.py`) and record shapes
  (the transform fills each next schema's fields, so values are the same size), with
  Faust's producer settings as `streams/app.py` sets them (acks=all, linger 5 ms, 16 KiB
  batches, no compression). Each hop awaits delivery of a batch's outputs before reading
  the next (the same at-least-once step as leadflow's stages). aiokafka: one process, one
  asyncio task and consumer per hop, one shared producer (the shape of one Faust worker).
  confluent-kafka: one process, one thread, consumer and producer per hop (librdkafka
  releases the GIL while it waits). `--baseline-processes 4` runs each hop in a process of
  its own; on this machine that was not faster (the broker needs the second core).
- **Repeats**: each figure is the median over `--repeat` runs; ratios are taken within a run
  (leadflow and the baselines run back to back), then their median.
"""


def write_plot(campaigns: Sequence[Result], path: Path) -> Path:
    """Throughput and latency across sizes, leadflow beside the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["summary"]["leads"] for r in campaigns]

    def series(get: Callable[[Mapping[str, Any]], Any]) -> list[float]:
        out = []
        for r in campaigns:
            try:
                value = get(r["summary"])
            except (KeyError, TypeError):
                value = None
            out.append(float("nan") if value is None else float(value))
        return out

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ours, aio, conf = "tab:blue", "tab:orange", "tab:green"
    left.plot(
        sizes, series(lambda s: s["throughput_leads_per_s"]), "o-", color=ours, label="leadflow"
    )
    left.plot(
        sizes,
        series(lambda s: s["baseline_aiokafka_leads_per_s"]),
        "s--",
        color=aio,
        label="bare aiokafka",
    )
    left.plot(
        sizes,
        series(lambda s: s["baseline_confluent_leads_per_s"]),
        "^--",
        color=conf,
        label="bare confluent-kafka",
    )
    left.axhline(5000, color="grey", linewidth=0.8, linestyle=":", label="target 5,000")
    left.set_xscale("log")
    left.set_xlabel("campaign size (leads)")
    left.set_ylabel("leads/s, raw → first touch sent")
    left.set_title("Throughput (median)")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)

    right.plot(
        sizes,
        series(lambda s: s["p99_end_to_end_ms"]),
        "o-",
        color=ours,
        label="leadflow p99, half load",
    )
    right.plot(
        sizes,
        series(lambda s: s["end_to_end_full_load_ms"]["p99_ms"]),
        "o:",
        color=ours,
        alpha=0.6,
        label="leadflow p99, full speed",
    )
    right.plot(
        sizes,
        series(lambda s: s["baseline_aiokafka"]["end_to_end_ms"]["p99_ms"]),
        "s--",
        color=aio,
        label="aiokafka p99, full speed",
    )
    right.plot(
        sizes,
        series(lambda s: s["baseline_confluent"]["end_to_end_ms"]["p99_ms"]),
        "^--",
        color=conf,
        label="confluent-kafka p99, full speed",
    )
    right.axhline(
        250, color="grey", linewidth=0.8, linestyle=":", label="target 250 ms (half load)"
    )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("campaign size (leads)")
    right.set_ylabel("ms, raw → first touch sent")
    right.set_title("End-to-end latency per lead (median of runs)")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results_dir: Path, docs_dir: Path = DOCS_DIR) -> list[Path]:
    """Write docs/BENCHMARKS.md (and the plot when there are campaign results)."""
    results = latest_results(results_dir)
    written = []
    md = docs_dir / "BENCHMARKS.md"
    md.write_text(render_markdown(results))
    written.append(md)
    campaigns = [r for (s, _), r in sorted(results.items()) if s == "campaign"]
    if campaigns:
        written.append(write_plot(campaigns, docs_dir / "benchmarks.png"))
    return written


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH_DIR / "results"
    for written_path in write_report(folder):
        print(f"wrote {written_path}")
