"""The two focused scenarios: a rate-limited campaign, and a scheduler with 1,000,000 touches.

**rate-limited.** 10,000 leads whose first touch is an SMS, against an SMS
limit of 100 per 60 s of campaign time. Provider limits count wall seconds
(``providers/ratelimit.py`` knows nothing of the campaign clock), so the
scenario runs the clock at ``RATE_SCALE`` (60) and sets the limit to the same
100 per 60 campaign seconds in wall terms: ``LEADFLOW_SMS_RATE=100/1``. The
simulator records when each message arrived; from those times come the
achieved rate and the most messages in any window. The worker's RSS is
sampled every second. Once the throttled campaign is all queued, a second
campaign (touch 1 a voice call, no limit) is published; its throughput is
compared with the same campaign run alone.

**scheduler.** 1,000,000 pending touches are written straight into
``pending_touches`` with ``COPY`` (due over the next 30 campaign days), the
worker is started, and its CPU is measured while nothing is due. Then a
stream of touches coming due over one minute is added; the delay from each
touch's due time to its release (``emitted_at``) gives p50/p99. The clock
runs at real speed here, so due times are wall times. The load is followed by
``VACUUM (ANALYZE)``, so the idle window measures the steady state and not
autovacuum's first pass over a million new rows; each run removes its
campaign at the end, so every repetition starts from the same queue.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.request
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import psycopg

from bench.pipeline import (
    BENCH_DIR,
    CLOCK_START,
    WARMUP_LEADS,
    BenchError,
    BenchServices,
    Running,
    bench_campaign,
    leadflow_processes,
    remove_campaigns,
    reset_clock,
    wait_for_count,
    wait_for_sent,
)
from bench.records import encode_leads, produce
from bench.stats import max_in_window, per_window, ratio, slope, summary_ms
from bench.timeline import read_timeline
from streams.clock import shared_clock
from streams.codec import AvroCodec

__all__ = ["RATE_SCALE", "rate_limited", "scheduler"]

VOICE_CAMPAIGN = BENCH_DIR / "campaign-voice.yaml"
#: Campaign clock speed of the rate-limited scenario: a campaign minute per wall second.
RATE_SCALE = 60.0
#: The SMS limit in campaign terms: 100 per 60 s.
SMS_LIMIT = 100
SMS_WINDOW_S = 60.0


async def _sim_times(sim_url: str, campaign_id: str) -> list[float]:
    """Arrival times (unix seconds) of the simulator's accepted messages of a campaign."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{sim_url}/_sim/messages", params={"campaign_id": campaign_id}) as resp,
    ):
        data = await resp.json()
    messages = data["messages"] if isinstance(data, dict) else data
    return sorted(float(m["accepted_at"]) for m in messages if int(m["touch"]) == 1)


def _sim_texts(sim_url: str) -> int:
    """Texts the simulator accepted so far (in this scenario, the throttled campaign's)."""
    url = f"{sim_url}/_sim/stats"  # the local simulator started by this bench: http://
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - see above
        stats = json.load(resp)
    return int(stats["messages"]["by_channel"].get("sms", 0))


def _queued(dsn: str, campaign_id: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pending_touches WHERE campaign_id = %s", (campaign_id,)
        ).fetchone()
    return int(str(row[0])) if row else 0


async def _voice_alone(services: BenchServices, other_leads: int, env: dict[str, str]) -> float:
    """Throughput of the voice campaign alone (same worker settings)."""
    campaign = bench_campaign(services, VOICE_CAMPAIGN)
    leads = encode_leads(campaign.id, other_leads, seed=11, key_prefix="b-")
    async with leadflow_processes(
        services, "ratelimit-alone", time_scale=RATE_SCALE, worker_env=env
    ) as running:
        settings = running.settings
        running.warm_up(campaign.id)
        produce(settings, settings.topic_name("raw"), leads)
        wait_for_sent(settings, WARMUP_LEADS + other_leads, alive=running.run.check_alive)
        running.run.close()
        timeline = read_timeline(settings.bootstrap_servers, settings.topic_name)[""]
    return other_leads / timeline.span_s()


async def rate_limited(
    services: BenchServices,
    leads: int = 10_000,
    other_leads: int = 5_000,
    *,
    limit_by: str = "provider",
) -> dict[str, Any]:
    """The rate-limited scenario (see the module docstring); its figures.

    ``limit_by="provider"`` sets the SMS provider account's limit (wall time,
    ``LEADFLOW_SMS_RATE``, scaled by hand); ``"campaign"`` sets the throttled
    campaign's own ``channels.sms.rate: 100/60``, which runs on the campaign clock.
    """
    window_wall = SMS_WINDOW_S / RATE_SCALE
    if limit_by == "provider":
        env = {"LEADFLOW_SMS_RATE": f"{SMS_LIMIT}/{window_wall:g}"}
        limit_text = f"provider: LEADFLOW_SMS_RATE={SMS_LIMIT}/{window_wall:g} (wall seconds)"
        throttled_rate = None
    else:
        env = {}
        throttled_rate = f"{SMS_LIMIT}/{SMS_WINDOW_S:g}"
        limit_text = f"campaign: channels.sms.rate {throttled_rate} (campaign seconds)"
    alone = await _voice_alone(services, other_leads, env)
    throttled = bench_campaign(services, sms_rate=throttled_rate)
    other = bench_campaign(services, VOICE_CAMPAIGN)
    a_leads = encode_leads(throttled.id, leads, key_prefix="a-")
    b_leads = encode_leads(other.id, other_leads, seed=11, key_prefix="b-")
    async with leadflow_processes(
        services, f"ratelimit-{leads}", time_scale=RATE_SCALE, worker_env=env
    ) as running:
        settings = running.settings
        raw = settings.topic_name("raw")
        running.warm_up(other.id)
        sampler = running.sampler(services, interval=1.0)
        sampler.start()
        started = time.monotonic()
        produce(settings, raw, a_leads)
        while _queued(services.dsn, throttled.id) < leads:
            running.run.check_alive()
            if time.monotonic() - started > 600:
                raise BenchError("the throttled campaign was not queued within 600 s")
            await asyncio.sleep(0.5)
        queued_s = time.monotonic() - started
        produce(settings, raw, b_leads)
        timeout_s = leads / SMS_LIMIT * window_wall * 3 + 600
        wait_for_sent(
            settings,
            WARMUP_LEADS + leads + other_leads,
            alive=running.run.check_alive,
            timeout_s=timeout_s,
        )
        # ``sent`` also holds repeats and the voice campaign's later touches, so its
        # count can be reached before every text went out: wait for the texts too.
        wait_for_count(
            lambda: _sim_texts(running.run.sim_url),
            leads,
            what="texts the simulator accepted",
            alive=running.run.check_alive,
            stall_s=60.0,
            timeout_s=timeout_s,
            poll_s=1.0,
        )
        sampler.stop()
        times = await _sim_times(running.run.sim_url, throttled.id)
        running.run.close()
        timelines = read_timeline(
            settings.bootstrap_servers, settings.topic_name, groups={"a": "a-", "b": "b-"}
        )
    limit_per_s = SMS_LIMIT / window_wall
    achieved = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    series = sampler.series_mb("worker")
    throttled_phase = [(t, mb) for t, mb in series if t >= queued_s]
    mem_slope = slope(throttled_phase)
    with_other = other_leads / timelines["b"].span_s()
    return {
        "scenario": "rate-limited" if limit_by == "provider" else "rate-limited-campaign",
        "leads": leads,
        "time_scale": RATE_SCALE,
        "limit_by": limit_text,
        "sms_limit": f"{SMS_LIMIT}/{SMS_WINDOW_S:g}s campaign = {SMS_LIMIT}/{window_wall:g}s wall",
        "sms_sent": len(times),
        "throttled_sent_status": dict(timelines["a"].sent_status),
        "sms_per_window_series": per_window(times, window_wall),
        "achieved_per_window": round(achieved * window_wall, 2),
        "limit_per_window": SMS_LIMIT,
        "achieved_ratio_to_limit": round(achieved / limit_per_s, 4),
        "max_in_any_window": max_in_window(times, window_wall),
        "queued_all_s": round(queued_s, 2),
        "send_phase_s": round(times[-1] - times[0], 2) if times else None,
        "peak_rss_worker_mb": sampler.peak_mb("worker", hwm=True),
        "worker_rss_mb_series": series[::5],
        "worker_rss_slope_mb_per_min": None if mem_slope is None else round(mem_slope * 60, 3),
        "worker_rss_throttled_phase_mb": {
            "first": throttled_phase[0][1] if throttled_phase else None,
            "last": throttled_phase[-1][1] if throttled_phase else None,
            "max": max((mb for _, mb in throttled_phase), default=None),
        },
        "other_campaign_leads": other_leads,
        "other_alone_leads_per_s": round(alone, 1),
        "other_beside_throttled_leads_per_s": round(with_other, 1),
        "other_throughput_ratio": ratio(round(with_other, 1), round(alone, 1)),
        # Where the second campaign's leads waited, stage by stage (p50/p99 ms).
        "other_beside_stages_ms": timelines["b"].metrics()["stages"],
        "cpu_s": {k: sampler.cpu(k) for k in ("worker", "sim", "broker", "postgres")},
    }


# --- scheduler ------------------------------------------------------------------------------


def _touch_payload(codec: AvroCodec, campaign_id: str, lead_id: str, due: datetime) -> bytes:
    return codec.encode(
        {
            "campaign_id": campaign_id,
            "lead_id": lead_id,
            "touch": 1,
            "channel": "sms",
            "persona": "gianna",
            "template": "touch-1",
            "variant": "a-question",
            "due_at": due,
            "priority": 2500,
            "tier": "B",
            "attempt": 1,
            "event_time": due,
            "to_phone": "+12125550100",
            "to_email": "ana.smith.1@acme.example",
            "first_name": "Ana",
            "last_name": "Smith",
            "company": "Acme Solar",
            "title": "Owner",
            "timezone": "America/New_York",
            "state": "NY",
            "identity_key": "0" * 64,
        }
    )


def _copy_touches(dsn: str, rows: list[tuple[Any, ...]] | Any) -> float:
    """COPY rows into pending_touches; returns seconds taken."""
    started = time.monotonic()
    with psycopg.connect(dsn) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY pending_touches (campaign_id, lead_id, touch, kafka_partition, channel, "
                "priority, due_at, payload) FROM STDIN"
            ) as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()
    return time.monotonic() - started


def _vacuum_queue(dsn: str) -> None:
    """``VACUUM (ANALYZE) pending_touches``: fresh statistics, no autovacuum pass pending."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) pending_touches")


async def _release_stream(
    services: BenchServices,
    running: Running,
    now: datetime,
    codec: AvroCodec,
    campaign_id: str,
    due_stream: int,
    stream_s: float,
) -> list[tuple[Any, ...]]:
    """Queue ``due_stream`` touches coming due over ``stream_s`` s; (due, emitted) epochs of each.

    Waits until every one was released (BenchError when that takes too long).
    """
    # the stream coming due: evenly over stream_s, starting 5 s from now
    start = now + timedelta(seconds=5)
    step = stream_s / due_stream
    stream_rows = []
    for k in range(due_stream):
        due = start + timedelta(seconds=k * step)
        lead = f"due-{k:06d}"
        stream_rows.append(
            (
                campaign_id,
                lead,
                1,
                k % 8,
                "sms",
                2500,
                due,
                _touch_payload(codec, campaign_id, lead, due),
            )
        )
    await asyncio.to_thread(_copy_touches, services.dsn, stream_rows)
    deadline = time.monotonic() + stream_s + 120
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        running.run.check_alive()
        with psycopg.connect(services.dsn) as conn:
            rows = conn.execute(
                "SELECT extract(epoch FROM due_at), extract(epoch FROM emitted_at) "
                "FROM pending_touches WHERE campaign_id = %s AND lead_id LIKE 'due-%%'",
                (campaign_id,),
            ).fetchall()
        if rows and all(r[1] is not None for r in rows):
            break
        await asyncio.sleep(2)
    else:
        raise BenchError("the stream of due touches was not all released in time")
    return rows


async def scheduler(
    services: BenchServices,
    pending: int = 1_000_000,
    due_stream: int = 6_000,
    stream_s: float = 60.0,
    idle_s: float = 30.0,
) -> dict[str, Any]:
    """The scheduler scenario (see the module docstring); its figures."""
    campaign = bench_campaign(services)
    codec = AvroCodec("leadflow.TouchDue")
    reset_clock(services.dsn)
    clock = shared_clock(services.dsn, 1.0, CLOCK_START)
    offset = clock.campaign_anchor - clock.wall_anchor  # campaign = wall + offset
    now = clock.now()
    payload = _touch_payload(codec, campaign.id, "future", now)
    rng = random.Random(5)
    channels = ("sms", "voice", "email")
    future = (
        (
            campaign.id,
            f"future-{i:07d}",
            1,
            i % 8,
            channels[i % 3],
            rng.randint(0, 4000),
            now + timedelta(hours=1, seconds=rng.uniform(0, 30 * 86400)),
            payload,
        )
        for i in range(pending)
    )
    copy_s = await asyncio.to_thread(_copy_touches, services.dsn, future)
    await asyncio.to_thread(_vacuum_queue, services.dsn)
    try:
        async with leadflow_processes(
            services, f"scheduler-{pending}", time_scale=1.0, new_clock=False
        ) as running:
            running.warm_up(campaign.id)
            await asyncio.sleep(3)
            sampler = running.sampler(services, interval=1.0)
            sampler.start()
            await asyncio.sleep(idle_s)
            sampler.stop()
            idle_cpu = {k: sampler.cpu(k) for k in ("worker", "postgres")}
            rows = await _release_stream(
                services, running, clock.now(), codec, campaign.id, due_stream, stream_s
            )
    finally:  # the next repetition starts from the same queue
        for removed in await asyncio.to_thread(remove_campaigns, services.dsn, [campaign.id]):
            services.campaign_ids.remove(removed)
        await asyncio.to_thread(_vacuum_queue, services.dsn)
    delays = [(float(str(emitted)) - (float(str(due)) - offset)) * 1000 for due, emitted in rows]
    summary = summary_ms(delays)
    return {
        "scenario": "scheduler",
        "pending_touches": pending,
        "copy_s": round(copy_s, 2),
        "due_stream": due_stream,
        "due_stream_s": stream_s,
        "due_to_emit_ms": summary,
        "p50_due_to_emit_ms": summary["p50_ms"],
        "p99_due_to_emit_ms": summary["p99_ms"],
        "early_releases": sum(1 for d in delays if d < -1),
        "idle_window_s": idle_s,
        "idle_cpu_s": idle_cpu,
        "idle_cpu_worker_pct_of_core": None
        if idle_cpu["worker"] is None
        else round(idle_cpu["worker"] / idle_s * 100, 2),
        "idle_cpu_postgres_pct_of_core": None
        if idle_cpu["postgres"] is None
        else round(idle_cpu["postgres"] / idle_s * 100, 2),
    }
