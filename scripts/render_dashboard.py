"""Render the Grafana dashboard's key panels as one PNG, from a worker's real ``/metrics``.

A Grafana screenshot is not possible without a browser, so this plays the
part of Prometheus and Grafana: it scrapes a worker's ``/metrics`` every few
seconds into a JSON Lines file, then draws the dashboard's key panels
(infra/grafana/leadflow-dashboard.json) with matplotlib, computing rates and
histogram quantiles the way PromQL does.

::

    # run a campaign on local Kafka/Postgres (like `leadflow demo`), scrape, plot
    .venv/bin/python scripts/render_dashboard.py --leads 2000

    # scrape a worker that is already running, for 5 minutes, then plot
    .venv/bin/python scripts/render_dashboard.py --url http://127.0.0.1:6066/metrics --seconds 300

    # plot an earlier scrape file again
    .venv/bin/python scripts/render_dashboard.py --from-jsonl metrics.jsonl

The campaign run needs Kafka and Postgres running (``leadflow infra up``). It
stores the example campaign under a fresh id with topics of its own, starts
the simulator and one worker (``streams.orchestrate.LocalRun``), publishes
the leads (5 % invalid, 3 % duplicates; 2 % reply and 1 % text STOP after
touch 1) and a few poison records (``--poison``, so the dead-letter panel has
something to show), waits until every lead has ended, scrapes a few seconds
more, and stops what it started. The scrape file stays in the run's folder under
``.leadflow/dashboard/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import math
import os
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import matplotlib as mpl
from confluent_kafka import Producer

mpl.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from prometheus_client.parser import text_string_to_metric_families

from sinks.campaigns import CampaignStore
from streams.admin import ensure_topics
from streams.campaign import load_campaign
from streams.ingest import ingest_file
from streams.leadgen import LeadMix, write_csv
from streams.orchestrate import LocalRun
from streams.settings import REPO_ROOT, get_settings

DEFAULT_OUT = REPO_ROOT / "docs" / "dashboard.png"
EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"
STAGES = ("enrich", "score", "schedule", "send", "sequence", "inbound")
CHANNELS = ("sms", "voice", "email")
_RATE_VARS = (
    "LEADFLOW_SMS_RATE",
    "LEADFLOW_VOICE_RATE",
    "LEADFLOW_EMAIL_RATE",
    "LEADFLOW_ENRICH_RATE",
)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    """One scrape: unix time and every sample as (name, labels, value)."""

    t: float
    samples: list[tuple[str, dict[str, str], float]]


def say(text: str) -> None:
    """One line of progress on stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --- scraping --------------------------------------------------------------------------------


def parse_exposition(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every leadflow sample of a ``/metrics`` body."""
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        if family.name.startswith("leadflow_")
        for s in family.samples
    ]


async def scrape_until(url: str, path: Path, interval: float, stop: asyncio.Event) -> int:
    """Append one JSON line per scrape of ``url`` to ``path`` until ``stop`` is set."""
    count = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        with path.open("a", encoding="utf-8") as fh:
            while not stop.is_set():
                started = time.time()
                try:
                    async with http.get(url) as resp:
                        text = await resp.text() if resp.status == 200 else ""
                except (aiohttp.ClientError, TimeoutError):
                    text = ""  # not up yet, or busy: skip this point
                if text:
                    line = {"t": started, "samples": parse_exposition(text)}
                    fh.write(json.dumps(line, separators=(",", ":")) + "\n")
                    fh.flush()
                    count += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        stop.wait(), max(0.0, interval - (time.time() - started))
                    )
    return count


def load_scrapes(path: Path) -> list[Scrape]:
    """The scrapes of a JSON Lines file written by :func:`scrape_until`."""
    scrapes = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            data = json.loads(line)
            samples = [(str(n), dict(lb), float(v)) for n, lb, v in data["samples"]]
            scrapes.append(Scrape(float(data["t"]), samples))
    return sorted(scrapes, key=lambda s: s.t)


# --- PromQL-like helpers ---------------------------------------------------------------------


def series(
    scrapes: Sequence[Scrape],
    name: str,
    by: Sequence[str],
    where: Callable[[dict[str, str]], bool] = lambda _: True,
) -> dict[tuple[str, ...], list[float]]:
    """``sum by (by) (name{where})`` at every scrape (NaN where a group is absent)."""
    groups: dict[tuple[str, ...], list[float]] = {}
    for i, scrape in enumerate(scrapes):
        for sample_name, labels, value in scrape.samples:
            if sample_name != name or not where(labels):
                continue
            key = tuple(labels.get(b, "") for b in by)
            row = groups.setdefault(key, [math.nan] * len(scrapes))
            row[i] = value if math.isnan(row[i]) else row[i] + value
    return groups


def rate(times: Sequence[float], values: Sequence[float], window: int = 3) -> list[float]:
    """Per-second increase over the last ``window`` scrapes (counter resets handled)."""
    out = [math.nan] * len(values)
    for i in range(len(values)):
        j = max(0, i - window)
        if i == j or math.isnan(values[i]):
            continue
        increase, last = 0.0, values[j] if not math.isnan(values[j]) else 0.0
        for k in range(j + 1, i + 1):
            v = values[k]
            if math.isnan(v):
                continue
            increase += v - last if v >= last else v  # a reset starts again from 0
            last = v
        out[i] = increase / (times[i] - times[j])
    return out


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """PromQL's ``histogram_quantile`` over cumulative bucket counts (``le`` -> count)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # in the +Inf bucket: the highest finite bound
            inside = count - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, count
    return lower


def quantile_series(
    scrapes: Sequence[Scrape], name: str, stage: str, q: float, window: int = 5
) -> list[float]:
    """``histogram_quantile(q, increase(name_bucket{stage}[window scrapes]))``."""
    per_scrape: list[dict[float, float]] = []
    for scrape in scrapes:
        buckets: dict[float, float] = defaultdict(float)
        for sample_name, labels, value in scrape.samples:
            if sample_name == f"{name}_bucket" and labels.get("stage") == stage:
                buckets[float(labels["le"])] += value
        per_scrape.append(buckets)
    out = []
    for i, now in enumerate(per_scrape):
        then = per_scrape[max(0, i - window)]
        delta = {le: now[le] - then.get(le, 0.0) for le in now}
        out.append(histogram_quantile(q, delta) if i else math.nan)
    return out


# --- drawing ---------------------------------------------------------------------------------


def _plot_lines(
    ax: Axes,
    x: Sequence[float],
    lines: Mapping[str, Sequence[float]],
    title: str,
    unit: str,
    *,
    step: bool = False,
) -> None:
    drawn = False
    for label, ys in sorted(lines.items()):
        if all(math.isnan(y) or y == 0 for y in ys):
            continue
        if step:
            ax.step(x, ys, where="post", label=label, linewidth=1.4)
        else:
            ax.plot(x, ys, label=label, linewidth=1.4)
        drawn = True
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_ylabel(unit, fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=8)
    if drawn:
        ax.legend(fontsize=7, loc="upper right", ncol=2)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def render_png(
    scrapes: Sequence[Scrape], out: Path, title: str, campaign: str | None = None
) -> None:
    """Draw the dashboard's key panels from ``scrapes`` into ``out``.

    ``campaign`` limits the campaign panel to one campaign (the dashboard's
    ``$campaign`` variable); None shows every campaign the worker reported.
    """
    if len(scrapes) < 2:
        raise SystemExit("need at least two scrapes to draw rates")
    t0 = scrapes[0].t
    times = [s.t for s in scrapes]
    x = [t - t0 for t in times]
    fig, axes = plt.subplots(4, 2, figsize=(15, 15), sharex=True)
    fig.suptitle(title, fontsize=12)

    records = series(scrapes, "leadflow_stage_records_total", ["stage"])
    _plot_lines(
        axes[0][0],
        x,
        {s[0]: rate(times, v) for s, v in records.items()},
        "Throughput per stage: sum by (stage) (rate(leadflow_stage_records_total))",
        "records / s",
    )
    lag = series(scrapes, "leadflow_consumer_lag_records", ["stage"])
    _plot_lines(
        axes[0][1],
        x,
        {s[0]: v for s, v in lag.items()},
        "Consumer lag: sum by (stage) (leadflow_consumer_lag_records)",
        "records",
    )
    stages = sorted({s[0] for s in records})
    _plot_lines(
        axes[1][0],
        x,
        {
            stage: quantile_series(scrapes, "leadflow_stage_event_latency_seconds", stage, 0.99)
            for stage in stages
        },
        "p99 latency, Kafka timestamp -> outputs durable (leadflow_stage_event_latency_seconds)",
        "seconds",
    )
    axes[1][0].set_yscale("symlog", linthresh=0.1)
    dead = series(scrapes, "leadflow_dead_letters_total", ["stage", "reason"])
    _plot_lines(
        axes[1][1],
        x,
        # a counter not exported yet has not counted anything: 0
        {f"{s}/{r}": [0.0 if math.isnan(y) else y for y in v] for (s, r), v in dead.items()},
        "Dead letters (cumulative): leadflow_dead_letters_total by stage/reason",
        "records",
        step=True,
    )
    calls = series(
        scrapes,
        "leadflow_provider_calls_total",
        ["provider"],
        lambda lb: lb.get("outcome") == "ok" and lb.get("provider", "").split("-")[0] in CHANNELS,
    )
    limited = series(scrapes, "leadflow_provider_rate_limited_total", ["provider"])
    sends = {p[0].split("-")[0]: rate(times, v) for p, v in calls.items()}
    sends |= {f"{p[0].split('-')[0]} 429": rate(times, v) for p, v in limited.items()}
    _plot_lines(
        axes[2][0],
        x,
        sends,
        "Sends per channel: rate(leadflow_provider_calls_total{outcome=ok}) and 429s",
        "calls / s",
    )
    pending = series(scrapes, "leadflow_pending_touches", ["due"])
    _plot_lines(
        axes[2][1],
        x,
        {d[0]: v for d, v in pending.items()},
        "Pending touches by due bucket (campaign clock): leadflow_pending_touches",
        "touches",
    )
    rss = series(scrapes, "leadflow_process_resident_memory_bytes", [])
    _plot_lines(
        axes[3][0],
        x,
        {"worker RSS": [v / 2**20 for v in rss.get((), [])]},
        "Process memory: leadflow_process_resident_memory_bytes",
        "MiB",
    )

    def chosen(labels: dict[str, str]) -> bool:
        return campaign is None or labels.get("campaign") == campaign

    completion = series(scrapes, "leadflow_campaign_completion_ratio", ["campaign"], chosen)
    cost = series(scrapes, "leadflow_campaign_cost_units", ["campaign"], chosen)
    ax = axes[3][1]
    _plot_lines(
        ax,
        x,
        {f"{c[0]} completion": [v * 100 for v in vs] for c, vs in completion.items()},
        "Campaign completion % (left) and cost units (right, dashed)",
        "% of leads ended",
    )
    if cost:
        twin = ax.twinx()
        for c, vs in sorted(cost.items()):
            twin.plot(x, vs, linestyle="--", linewidth=1.2, color="tab:red", label=f"{c[0]} cost")
        twin.set_ylabel("cost units", fontsize=8)
        twin.tick_params(labelsize=8)
    for ax in axes[3]:
        ax.set_xlabel("seconds since the first scrape", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


# --- a real campaign run ---------------------------------------------------------------------


def _accepted_ids(path: Path, rejects: Path | None) -> list[str]:
    rejected = set()
    if rejects is not None and rejects.exists():
        rejected = {json.loads(line)["line"] for line in rejects.read_text().splitlines()}
    with path.open(newline="") as fh:
        rows = enumerate(csv.DictReader(fh), start=2)
        return [row["lead_id"] for n, row in rows if n not in rejected]


async def run_campaign(
    leads: int, time_scale: float, interval: float, poison: int
) -> tuple[Path, str, str]:
    """Run one campaign while scraping its worker; returns the scrape file, title, campaign."""
    settings = get_settings()
    stamp = datetime.now(UTC).strftime("%m%d-%H%M%S")
    campaign = replace(load_campaign(EXAMPLE), id=f"dash-{stamp}-{uuid.uuid4().hex[:4]}")
    CampaignStore(settings.dsn).create(campaign)
    settings = replace(settings, topic_prefix=f"{settings.topic_prefix}{campaign.id}-")
    ensure_topics(settings)
    folder = settings.home_dir / "dashboard" / campaign.id
    folder.mkdir(parents=True, exist_ok=True)
    jsonl = folder / "metrics.jsonl"
    env = {
        **os.environ,
        "LEADFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "LEADFLOW_METRICS_INTERVAL": str(max(1.0, interval)),
        "LEADFLOW_METRICS_DB_INTERVAL": str(max(1.0, interval)),
    }
    for var in _RATE_VARS:  # like `leadflow demo`: the simulator has no limits
        env.setdefault(var, "0")
    run = LocalRun(settings, folder, env, time_scale=time_scale)
    stop = asyncio.Event()
    scraper: asyncio.Task[int] | None = None
    started = time.monotonic()
    try:
        await run.start_sim()
        run.start_worker()
        url = f"http://127.0.0.1:{run.web_ports[0]}/metrics"
        say(f"campaign {campaign.id}; worker /metrics at {url}; files in {folder}")
        scraper = asyncio.create_task(scrape_until(url, jsonl, interval, stop))
        path = write_csv(folder / "leads.csv", leads, mix=LeadMix(invalid=0.05, duplicates=0.03))
        await asyncio.sleep(3 * interval)  # a few idle points before the leads arrive
        summary = await asyncio.to_thread(ingest_file, settings, campaign.id, path)
        raw = settings.topic_name("raw")
        await asyncio.to_thread(_publish_poison, settings.bootstrap_servers, raw, poison)
        say(f"published {summary.published} leads ({summary.rejected} rejected), {poison} poison")
        accepted = _accepted_ids(path, summary.rejects_file)
        replies = {lead: "reply" for lead in accepted[: len(accepted) // 50]}
        replies |= {lead: "opt_out" for lead in accepted[-(len(accepted) // 100) :]}
        await run.drive(campaign.id, summary.published, replies=replies, timeout_s=900)
        say(f"every lead ended after {time.monotonic() - started:.0f} s; scraping a little more")
        await asyncio.sleep(4 * interval)
    finally:
        stop.set()
        if scraper is not None:
            say(f"{await scraper} scrapes in {jsonl}")
        run.close()
    title = (
        f"leadflow worker /metrics — campaign {campaign.id}: {leads:,} leads, "
        f"campaign clock {time_scale:,.0f}x, scraped every {interval:g} s"
    )
    return jsonl, title, campaign.id


def _publish_poison(bootstrap: str, topic: str, count: int) -> None:
    """Records that are not ours on ``raw``: each must become one dead letter."""
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(count):
        producer.produce(topic, b"\x00not avro", f"poison-{i}".encode())
    producer.flush(10)


async def scrape_for(url: str, seconds: float, interval: float, jsonl: Path) -> None:
    """Scrape ``url`` for ``seconds`` seconds into ``jsonl``."""
    stop = asyncio.Event()
    task = asyncio.create_task(scrape_until(url, jsonl, interval, stop))
    await asyncio.sleep(seconds)
    stop.set()
    say(f"{await task} scrapes in {jsonl}")


def main(argv: Iterable[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leads", type=int, default=2000, help="leads of the campaign run")
    parser.add_argument("--time-scale", type=float, default=12000.0, help="campaign clock speed")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    parser.add_argument("--url", help="scrape this /metrics instead of running a campaign")
    parser.add_argument("--seconds", type=float, default=120.0, help="how long to scrape --url")
    parser.add_argument("--from-jsonl", type=Path, help="only plot this earlier scrape file")
    parser.add_argument("--jsonl", type=Path, help="scrape file for --url (default: beside --out)")
    parser.add_argument("--poison", type=int, default=5, help="undecodable records sent to raw")
    parser.add_argument("--campaign", help="campaign shown in the campaign panel (default: all)")
    parser.add_argument("--title", help="title of the picture (default: what was scraped)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG to write")
    args = parser.parse_args(list(argv) if argv is not None else None)

    if args.from_jsonl is not None:
        jsonl, title = args.from_jsonl, f"leadflow worker /metrics — {args.from_jsonl.name}"
    elif args.url:
        jsonl = args.jsonl or args.out.with_suffix(".jsonl")
        asyncio.run(scrape_for(args.url, args.seconds, args.interval, jsonl))
        title = f"leadflow worker /metrics — {args.url}"
    else:
        jsonl, title, args.campaign = asyncio.run(
            run_campaign(args.leads, args.time_scale, args.interval, args.poison)
        )
    scrapes = load_scrapes(jsonl)
    render_png(scrapes, args.out, args.title or title, args.campaign)
    say(f"wrote {args.out} from {len(scrapes)} scrapes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
