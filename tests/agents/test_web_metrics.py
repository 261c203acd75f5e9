"""``/metrics`` (agents/web_metrics.py): the polls on real Postgres and Kafka, and a real worker.

The last test starts a worker and the simulator (``LocalRun``), runs a tiny
campaign plus one poison record, scrapes ``/metrics`` over HTTP and parses it
with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import csv
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psycopg
import pytest
from confluent_kafka import KafkaException, Producer
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from psycopg.types.json import Jsonb

from agents.web_metrics import campaign_figures, pending_touch_counts, poll_lag, poll_postgres
from sinks.campaigns import CampaignStore
from sinks.db import StageDatabase
from streams import metrics
from streams.admin import ensure_topics
from streams.campaign import load_campaign
from streams.ingest import ingest_file
from streams.lag import STAGE_INPUT_TOPICS
from streams.leadgen import LeadMix, write_csv
from streams.orchestrate import LocalRun
from streams.settings import REPO_ROOT, Settings

#: Every family the issue lists, as prometheus-client's parser names them
#: (counters without ``_total``).
LISTED_FAMILIES = {
    # per stage: records, errors by type, latency from event time and from the queue
    "leadflow_stage_records",
    "leadflow_stage_errors",
    "leadflow_stage_event_latency_seconds",
    "leadflow_stage_processing_seconds",
    # dead letters by stage and reason
    "leadflow_dead_letters",
    # provider calls, 429s, breaker state, remaining quota
    "leadflow_provider_calls",
    "leadflow_provider_rate_limited",
    "leadflow_provider_breaker_state",
    "leadflow_provider_quota_remaining",
    # consumer lag per topic and partition
    "leadflow_consumer_lag_records",
    # pending touches by due bucket
    "leadflow_pending_touches",
    # sink flush durations and backpressure events
    "leadflow_sink_flush_seconds",
    "leadflow_sink_backpressure",
    # process memory
    "leadflow_process_resident_memory_bytes",
    # per-campaign completion rate and cost units
    "leadflow_campaign_completion_ratio",
    "leadflow_campaign_cost_units",
}


def _campaign(conn: psycopg.Connection[tuple[object, ...]], status: str = "active") -> str:
    campaign_id = f"m-{uuid.uuid4().hex[:10]}"
    example = load_campaign(REPO_ROOT / "examples" / "campaign.yaml")
    config = replace(example, id=campaign_id).to_dict()  # a valid stored campaign
    conn.execute(
        "INSERT INTO campaigns (campaign_id, name, status, config) VALUES (%s, %s, %s, %s)",
        (campaign_id, campaign_id, status, Jsonb(config)),
    )
    return campaign_id


# --- Postgres polls --------------------------------------------------------------------


async def test_pending_touches_fall_into_campaign_clock_buckets(dsn: str) -> None:
    channel = f"ch{uuid.uuid4().hex[:6]}"  # a channel of this test's own
    far_past = datetime(2001, 1, 1, tzinfo=UTC)
    far_future = datetime(2201, 1, 1, tzinfo=UTC)
    with psycopg.connect(dsn) as conn:
        campaign_id = _campaign(conn)
        rows: list[tuple[int, datetime, datetime | None]] = [
            (1, far_past, None),
            (2, far_past, None),
            (3, far_future, None),
        ]
        rows.append((4, far_past, datetime.now(UTC)))  # released already: not pending
        for touch, due, emitted in rows:
            conn.execute(
                "INSERT INTO pending_touches (campaign_id, lead_id, touch, kafka_partition, "
                "channel, priority, due_at, payload, emitted_at) "
                "VALUES (%s, 'lead-1', %s, 0, %s, 1, %s, '\\x00', %s)",
                (campaign_id, touch, channel, due, emitted),
            )
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        counts = await pending_touch_counts(conn)
    assert counts[(channel, "overdue")] == 2
    assert counts[(channel, "later")] == 1
    # every bucket of the pipeline's channels is reported, zeros included
    assert {due for (ch, due) in counts if ch == "sms"} == set(metrics.PENDING_TOUCH_BUCKETS)


def _queue_touch(
    conn: psycopg.Connection[tuple[object, ...]],
    campaign_id: str,
    channel: str,
    touch: int,
    due_in: str,
) -> None:
    """Queue touch ``touch`` of 'lead-1', due ``due_in`` (an interval) from campaign-clock now."""
    conn.execute(
        "INSERT INTO pending_touches (campaign_id, lead_id, touch, kafka_partition, channel, "
        "priority, due_at, payload) SELECT %s, 'lead-1', %s, 0, %s, 1, "
        "coalesce((SELECT campaign_anchor + (clock_timestamp() - wall_anchor) * scale "
        "FROM clock_anchor WHERE id = 1), clock_timestamp()) + %s::interval, '\\x00'",
        (campaign_id, touch, channel, due_in),
    )


async def test_pending_touches_later_is_every_unreleased_touch_beyond_a_day(dsn: str) -> None:
    # The query counts all unreleased touches per channel and only those due
    # within a day by bucket; "later" is the difference, never a near touch.
    channel = f"ch{uuid.uuid4().hex[:6]}"
    with psycopg.connect(dsn) as conn:
        campaign_id = _campaign(conn)
        for touch, offset in enumerate(["-1 day", "2 hours", "3 days", "40 days", "400 days"]):
            _queue_touch(conn, campaign_id, channel, touch, offset)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        counts = await pending_touch_counts(conn)
    mine = {due: n for (ch, due), n in counts.items() if ch == channel}
    assert mine["overdue"] == 1
    assert mine["later"] == 3
    assert sum(mine.values()) == 5


def test_pending_touch_count_reads_the_index_not_the_queue_table(dsn: str) -> None:
    # Migration 0007's partial index serves both parts of the count: with
    # sequential scans priced out, the plan reads pending_touches through it
    # (without the index, only a sequential scan could answer).
    from agents.web_metrics import _PENDING

    with psycopg.connect(dsn) as conn:
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(str(row[0]) for row in conn.execute(f"EXPLAIN {_PENDING}").fetchall())
    assert "Seq Scan on pending_touches" not in plan, plan
    assert "pending_touches_channel_due_idx" in plan, plan


async def test_pending_touch_buckets_follow_the_shared_campaign_clock(dsn: str) -> None:
    # A touch due in 30 campaign minutes is "next_1h" at any scale, when read
    # against the clock the query computes from clock_anchor.
    channel = f"ch{uuid.uuid4().hex[:6]}"
    with psycopg.connect(dsn) as conn:
        campaign_id = _campaign(conn)
        anchor = conn.execute("SELECT scale FROM clock_anchor WHERE id = 1").fetchone()
        scale = float(str(anchor[0])) if anchor else 1.0
        if scale > 60:  # 30 campaign minutes would pass before the query; nothing to test
            pytest.skip(f"clock anchor runs at scale {scale:g}")
        _queue_touch(conn, campaign_id, channel, 1, "30 minutes")
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        counts = await pending_touch_counts(conn)
    assert counts[(channel, "next_1h")] == 1
    assert counts.get((channel, "overdue"), 0) == 0


def _seed_campaign(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        campaign_id = _campaign(conn)
        states = ["completed"] * 3 + ["replied", "in_sequence", "in_sequence"]
        for i, state in enumerate(states):
            conn.execute(
                "INSERT INTO leads (campaign_id, lead_id, state) VALUES (%s, %s, %s)",
                (campaign_id, f"lead-{i}", state),
            )
        sends = [
            ("lead-0", "sms", "accepted", 1.0),
            ("lead-1", "sms", "accepted", 1.5),
            ("lead-2", "email", "failed", 0.0),
        ]
        for lead, channel, status, cost in sends:
            conn.execute(
                "INSERT INTO send_ledger (campaign_id, lead_id, touch, channel, idempotency_key, "
                "status, cost_units) VALUES (%s, %s, 1, %s, %s, %s, %s)",
                (campaign_id, lead, channel, uuid.uuid4().hex, status, cost),
            )
    return campaign_id


async def test_campaign_figures_give_completion_sends_and_cost(dsn: str) -> None:
    campaign_id = _seed_campaign(dsn)
    with psycopg.connect(dsn) as conn:
        cancelled = _campaign(conn, status="cancelled")
        conn.execute(
            "INSERT INTO leads (campaign_id, lead_id, state) VALUES (%s, 'x', 'completed')",
            (cancelled,),
        )
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        figures = await campaign_figures(conn, max_campaigns=1000)
        newest_only = await campaign_figures(conn, max_campaigns=1)
    assert figures["leads"][(campaign_id, "completed")] == 3
    assert figures["leads"][(campaign_id, "in_sequence")] == 2
    assert figures["completion"][(campaign_id,)] == pytest.approx(4 / 6)
    assert figures["sends"][(campaign_id, "sms", "accepted")] == 2
    assert figures["sends"][(campaign_id, "email", "failed")] == 1
    assert figures["cost"][(campaign_id, "sms")] == pytest.approx(2.5)
    assert figures["cost"][(campaign_id, "email")] == 0
    # finished campaigns are left out; the cap keeps the newest campaigns only
    assert all(key[0] != cancelled for key in figures["leads"])
    assert {key[0] for key in newest_only["leads"]} == {campaign_id}


async def test_poll_postgres_replaces_the_snapshots(dsn: str) -> None:
    campaign_id = _seed_campaign(dsn)
    db = StageDatabase(dsn, "metrics-test")
    try:
        before = time.time()
        await poll_postgres(db, max_campaigns=1)
    finally:
        await db.aclose()
    assert metrics.CAMPAIGN_COMPLETION.value(campaign_id) == pytest.approx(4 / 6)
    assert metrics.CAMPAIGN_COST_UNITS.value(campaign_id, "sms") == pytest.approx(2.5)
    assert metrics.CAMPAIGN_SENDS.value(campaign_id, "sms", "accepted") == 2
    assert metrics.PENDING_TOUCHES.value("sms", "overdue") is not None
    stamp = metrics.METRICS_POLL_TIMESTAMP.value("postgres")
    assert stamp is not None and stamp >= before


# --- Kafka poll ------------------------------------------------------------------------


async def test_poll_lag_reports_every_partition_of_every_stage_input(
    isolated: tuple[Settings, dict[str, str]],
) -> None:
    settings, _ = isolated
    ensure_topics(settings)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for i in range(3):
        producer.produce(settings.topic_name("raw"), f"v{i}".encode(), b"k", partition=0)
    assert producer.flush(10) == 0
    deadline = time.monotonic() + 15
    while True:  # fresh topics: partition leaders may not be known for a moment
        try:
            await poll_lag(settings)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    assert metrics.CONSUMER_LAG.value("enrich", "raw", "0") == 3
    assert metrics.CONSUMER_LAG.value("enrich", "raw", "1") == 0
    for stage, topic in STAGE_INPUT_TOPICS.items():
        for p in range(settings.topic_partitions):
            assert metrics.CONSUMER_LAG.value(stage, topic, str(p)) is not None, (stage, p)


# --- a real worker ---------------------------------------------------------------------


def _samples(text: str) -> Iterator[tuple[str, Sample]]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield family.name, sample


def _value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for _, s in _samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_worker_serves_metrics_with_every_listed_family(
    isolated: tuple[Settings, dict[str, str]], dsn: str, tmp_path: Path
) -> None:
    settings, env = isolated
    campaign = replace(
        load_campaign(REPO_ROOT / "examples" / "campaign.yaml"), id=f"wm-{uuid.uuid4().hex[:8]}"
    )
    CampaignStore(dsn).create(campaign)
    ensure_topics(settings)
    env = {
        **env,
        "LEADFLOW_METRICS_INTERVAL": "1",
        "LEADFLOW_METRICS_DB_INTERVAL": "1",
        "LEADFLOW_SMS_DAILY_CAP": "100000",
        "LEADFLOW_VOICE_RATE": "0",
        "LEADFLOW_EMAIL_RATE": "0",
        "LEADFLOW_ENRICH_RATE": "0",
    }
    run = LocalRun(settings, tmp_path, env, time_scale=20000)
    text = ""
    try:
        await run.start_sim()
        run.start_worker()
        ingest_file(settings, campaign.id, write_csv(tmp_path / "leads.csv", 20, mix=LeadMix(0, 0)))
        producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
        producer.produce(settings.topic_name("raw"), b"not avro", b"poison")
        assert producer.flush(10) == 0
        url = f"http://127.0.0.1:{run.web_ports[0]}/metrics"
        deadline = time.monotonic() + 120
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                run.check_alive()
                try:
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            content_type = resp.headers["Content-Type"]
                            text = await resp.text()
                except aiohttp.ClientError:
                    text = ""  # the web server is not up yet
                if (
                    text
                    and _value(text, "leadflow_stage_records_total", stage="send") > 0
                    and _value(text, "leadflow_dead_letters_total", stage="enrich") > 0
                    and _value(text, "leadflow_campaign_completion_ratio", campaign=campaign.id) > 0
                    and _value(text, "leadflow_campaign_cost_units", campaign=campaign.id) > 0
                    and 'leadflow_consumer_lag_records{partition="0"' in text
                ):
                    break
                await asyncio.sleep(1.0)
            else:
                pytest.fail(f"/metrics never showed the run's progress:\n{text[-3000:]}")
    finally:
        run.close()

    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) >= LISTED_FAMILIES, LISTED_FAMILIES - set(families)
    for stage in ("enrich", "score", "schedule", "send"):
        assert _value(text, "leadflow_stage_records_total", stage=stage, outcome="ok") > 0, stage
        assert _value(text, "leadflow_stage_event_latency_seconds_count", stage=stage) > 0, stage
        assert _value(text, "leadflow_stage_processing_seconds_count", stage=stage) > 0, stage
    assert _value(text, "leadflow_stage_records_total", stage="enrich", outcome="dead_letter") == 1
    assert _value(text, "leadflow_stage_errors_total", stage="enrich") >= 1
    assert _value(text, "leadflow_provider_calls_total", provider="sms-http", outcome="ok") > 0
    assert _value(text, "leadflow_provider_breaker_state", provider="sms-http") == 0
    window = _value(text, "leadflow_provider_quota_limit", account="sms", period="window")
    assert window > 0
    day_left = _value(text, "leadflow_provider_quota_remaining", account="sms", period="day")
    assert 0 < day_left < 100000
    lag_rows = [s for _, s in _samples(text) if s.name == "leadflow_consumer_lag_records"]
    assert {s.labels["stage"] for s in lag_rows} == set(STAGE_INPUT_TOPICS)
    assert {s.labels["due"] for s in families["leadflow_pending_touches"].samples} == set(
        metrics.PENDING_TOUCH_BUCKETS
    )
    assert _value(text, "leadflow_process_resident_memory_bytes") > 10_000_000
    assert _value(text, "leadflow_campaign_cost_units", campaign=campaign.id) > 0
    # no lead id or contact detail anywhere in a label
    with (tmp_path / "leads.csv").open(newline="") as fh:
        private = {row[k] for row in csv.DictReader(fh) for k in ("lead_id", "phone", "email")}
    for _, sample in _samples(text):
        assert not {"lead", "lead_id", "phone", "email"} & set(sample.labels), sample
        assert not any(p in v for p in private for v in sample.labels.values()), sample
