"""Campaign health (streams/health.py): the pure checks, then the readers on real services."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from confluent_kafka import Producer

from providers.breaker import BreakerConfig, CircuitBreaker
from providers.ratelimit import Rate
from providers.settings import ProviderSettings
from sinks.campaigns import CampaignNotFoundError, CampaignStore
from streams.admin import ensure_topics
from streams.campaign import Campaign, load_campaign
from streams.codec import AvroCodec
from streams.errors import ConfigError
from streams.health import (
    STAGES,
    STATE_HOME,
    BreakerStatus,
    BreakerWatch,
    Bucket,
    CampaignFacts,
    ChannelLimit,
    DeadLetterCounts,
    DeadLetterRow,
    HealthReport,
    HealthSettings,
    LeadRow,
    ProgressTracker,
    ProviderLimit,
    ServiceStatus,
    StageCounts,
    StageQueue,
    Step,
    build_campaign,
    campaign_limits,
    channel_limit,
    collect,
    estimate_eta,
    evaluate,
    fetch_worker,
    lead_counts,
    provider_limits,
    read_campaigns,
    read_dead_letter_rows,
    render_text,
    summarize_dead_letters,
)
from streams.lag import STAGE_INPUT_TOPICS
from streams.settings import REPO_ROOT, Settings, settings_table
from streams.state_machine import State

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"
NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
NO_LAG = dict.fromkeys(STAGES, 0)


def campaign(campaign_id: str = "c1") -> Campaign:
    return replace(load_campaign(EXAMPLE), id=campaign_id)


def row(
    state: State,
    n: int = 1,
    *,
    step: Step | None = None,
    touch: int = 0,
    idle: bool = False,
    due: int = 0,
    last_due: datetime | None = None,
) -> LeadRow:
    return LeadRow(state, step, touch, idle, n, due, last_due)


# --- where leads are ---------------------------------------------------------------------


def test_every_state_has_a_stage_and_every_stage_is_a_lag_stage() -> None:
    assert set(STATE_HOME) == set(State)
    assert {stage for stage, _ in STATE_HOME.values()} <= set(STAGE_INPUT_TOPICS)
    failures = {s for s, (_, bucket) in STATE_HOME.items() if bucket is Bucket.FAILED}
    assert failures == {State.INVALID, State.QUARANTINED, State.FAILED}


def test_leads_are_counted_at_the_stage_that_holds_them() -> None:
    rows = [
        row(State.NEW, 2),
        row(State.INVALID, 3),
        row(State.DUPLICATE, 4),
        row(State.ENRICHED, 5),
        row(State.DISQUALIFIED, 6),
        row(State.QUALIFIED, 7),
        row(State.IN_SEQUENCE, 8, step=Step.QUEUED, touch=2),
        row(State.IN_SEQUENCE, 9, step=Step.RELEASED, touch=2),
        row(State.IN_SEQUENCE, 10, step=Step.SENT, touch=3),
        row(State.RECONCILE, 11),
        row(State.QUARANTINED, 12),
        row(State.CANCELLED, 13),
        row(State.COMPLETED, 14),
        row(State.FAILED, 15),
        row(State.REPLIED, 16),
        row(State.OPTED_OUT, 17),
    ]
    states, stages, stuck = lead_counts(rows, NO_LAG)
    assert states["in_sequence"] == 27
    assert sum(states.values()) == sum(range(2, 18))
    assert stages == {
        "enrich": StageCounts(active=2, completed=4, failed=3),
        "score": StageCounts(active=5, completed=6),
        "schedule": StageCounts(active=7 + 8),
        "send": StageCounts(active=9 + 11, completed=13, failed=12),
        "sequence": StageCounts(active=10, completed=14, failed=15),
        "inbound": StageCounts(completed=16 + 17),
    }
    assert stuck == 0  # nothing idle


def test_a_lead_is_stuck_only_when_idle_with_nothing_queued_or_in_flight() -> None:
    idle = [
        row(State.QUALIFIED, 1, idle=True),  # schedule: scored lag decides
        row(State.IN_SEQUENCE, 10, idle=True, step=Step.QUEUED, touch=2),  # waiting: never
        row(State.IN_SEQUENCE, 100, idle=True, step=Step.SENT, touch=2),  # sent lag decides
        row(State.IN_SEQUENCE, 1000, idle=True, step=Step.UNQUEUED, touch=2),  # always
        row(State.RECONCILE, 10000, idle=True),  # waits for an operator: never
        row(State.COMPLETED, 100000, idle=True),  # terminal: never
        row(State.ENRICHED, 1_000_000, idle=False),  # recent: never
    ]
    assert lead_counts(idle, NO_LAG)[2] == 1 + 100 + 1000
    busy = {**NO_LAG, "sequence": 5}
    assert lead_counts(idle, busy)[2] == 1 + 1000
    unknown = dict.fromkeys(STAGES)
    assert lead_counts(idle, unknown)[2] == 1000


# --- ETA ------------------------------------------------------------------------------------


def test_a_channel_limit_is_the_slowest_of_provider_and_campaign() -> None:
    limit = channel_limit(
        "sms",
        provider_rate=Rate(100, 60),
        provider_daily_cap=0,
        campaign_rate=Rate(30, 60),
        campaign_daily_cap=None,
    )
    assert limit == ChannelLimit("sms", 0.5, "campaign-rate")
    capped = channel_limit(
        "sms",
        provider_rate=Rate(100, 60),
        provider_daily_cap=8640,
        campaign_rate=None,
        campaign_daily_cap=None,
    )
    assert capped == ChannelLimit("sms", 0.1, "provider-daily-cap")
    free = channel_limit(
        "voice", provider_rate=None, provider_daily_cap=0, campaign_rate=None, campaign_daily_cap=0
    )
    assert free == ChannelLimit("voice", None, "none")
    # a campaign's day is a campaign-clock day: 86400 / time_scale wall seconds
    scaled = channel_limit(
        "email",
        provider_rate=None,
        provider_daily_cap=864,
        campaign_rate=None,
        campaign_daily_cap=864,
        time_scale=2.0,
    )
    assert scaled == ChannelLimit("email", 0.01, "provider-daily-cap")
    assert channel_limit(
        "email",
        provider_rate=None,
        provider_daily_cap=0,
        campaign_rate=None,
        campaign_daily_cap=864,
        time_scale=2.0,
    ) == ChannelLimit("email", 0.02, "campaign-daily-cap")


def test_provider_limits_round_trip_through_json() -> None:
    limits = provider_limits(
        ProviderSettings.from_env({"LEADFLOW_SMS_RATE": "5/s", "LEADFLOW_VOICE_RATE": "0"})
    )
    assert limits["sms"] == ProviderLimit("sms", Rate(5, 1.0), 0)
    assert limits["voice"].rate is None
    for channel, limit in limits.items():
        doc = json.loads(json.dumps(limit.to_dict()))
        assert ProviderLimit.from_dict(channel, doc) == limit
    c = campaign()  # sms 100/60, daily cap 20000 (examples/campaign.yaml)
    per = campaign_limits(c, limits, time_scale=1.0)
    assert per["sms"] == ChannelLimit("sms", 20000 / 86400, "campaign-daily-cap")
    assert campaign_limits(c, limits, time_scale=1000.0)["sms"].source == "campaign-rate"


def limits(per_s: float | None) -> dict[str, ChannelLimit]:
    return {c: ChannelLimit(c, per_s, "provider-rate") for c in ("sms", "voice", "email")}


def test_eta_takes_the_slowest_of_observed_rate_limits_and_delays() -> None:
    c = campaign()  # sms +0, voice +24h, sms +48h, email +1 week
    rows = [
        row(State.IN_SEQUENCE, 100, step=Step.QUEUED, touch=2, last_due=NOW + timedelta(hours=2)),
        row(State.QUALIFIED, 10),
        row(State.COMPLETED, 500),
        row(State.RECONCILE, 3),  # not counted as remaining: it waits for an operator
    ]
    eta = estimate_eta(
        c, rows, finished_per_s=1.0, limits=limits(None), campaign_now=NOW, time_scale=3600.0
    )
    assert eta.remaining_leads == 110
    assert eta.observed_s == pytest.approx(110.0)
    # touch 2 (voice) queued for 100 leads, then touches 3 (sms), 4 (email); 10 leads need all 4
    assert dict(eta.remaining_touches) == {"sms": 100 + 20, "voice": 100 + 10, "email": 100 + 10}
    # the longest wait: a new lead's whole sequence (7 days of delays) at 3600x
    assert eta.delays_s == pytest.approx(7 * 24.0)
    assert (eta.basis, eta.lower_bound) == ("delays", False)
    assert eta.seconds == pytest.approx(168.0)

    slow = estimate_eta(
        c, rows, finished_per_s=1.0, limits=limits(0.5), campaign_now=NOW, time_scale=3600.0
    )
    assert slow.rate_limit_s == pytest.approx(120 / 0.5)
    assert slow.basis == "rate_limit"
    assert slow.seconds == pytest.approx(240.0)

    stalled = estimate_eta(
        c, rows, finished_per_s=0.01, limits=limits(None), campaign_now=NOW, time_scale=3600.0
    )
    assert stalled.basis == "observed"
    assert stalled.seconds == pytest.approx(11000.0)


def test_eta_without_finished_leads_is_a_lower_bound_and_zero_when_done() -> None:
    c = campaign()
    waiting = [
        row(State.IN_SEQUENCE, 5, step=Step.SENT, touch=4),
        row(State.IN_SEQUENCE, 5, step=Step.QUEUED, touch=4, last_due=NOW + timedelta(hours=1)),
    ]
    eta = estimate_eta(
        c, waiting, finished_per_s=0.0, limits=limits(None), campaign_now=NOW, time_scale=60.0
    )
    assert eta.lower_bound and eta.observed_s is None
    assert eta.basis == "delays"  # 1 h at 60x
    assert eta.seconds == pytest.approx(60.0)
    done = estimate_eta(
        c,
        [row(State.COMPLETED, 5)],
        finished_per_s=0.0,
        limits=limits(1.0),
        campaign_now=NOW,
        time_scale=1.0,
    )
    assert (done.seconds, done.basis, done.remaining_leads) == (0.0, "done", 0)


def test_a_campaign_report_adds_up_and_rates_use_wall_time() -> None:
    from streams.clock import CampaignClock

    clock = CampaignClock(3600.0, NOW.timestamp(), NOW.timestamp(), wall=lambda: NOW.timestamp())
    facts = CampaignFacts(
        campaign=campaign("c9"),
        status="active",
        rows=(
            row(State.IN_SEQUENCE, 4, step=Step.QUEUED, touch=1, due=3),
            row(State.IN_SEQUENCE, 2, step=Step.RELEASED, touch=2),
            row(State.COMPLETED, 30),
            row(State.INVALID, 2),
            row(State.RECONCILE, 1),
        ),
        finished_in_window=32,
        completed_in_window=30,
        # started 10 wall seconds ago (36,000 campaign seconds at 3600x)
        first_transition=NOW - timedelta(seconds=36000),
    )
    health = build_campaign(
        facts,
        clock=clock,
        lag=NO_LAG,
        limits=limits(None),
        dead_letters={"score": DeadLetterCounts(2, 1)},
        window_s=300.0,
    )
    assert (health.total, health.active, health.completed, health.failed) == (39, 7, 30, 2)
    assert (health.reconcile, health.finished, health.stuck) == (1, 32, 0)
    assert health.window_s == pytest.approx(10.0)
    assert health.finished_per_s == pytest.approx(3.2)
    assert health.fraction_finished == pytest.approx(32 / 39)
    assert health.pending_touches["sms"] == {"queued": 4, "due": 3, "in_flight": 0}
    assert health.pending_touches["voice"] == {"queued": 0, "due": 0, "in_flight": 2}


# --- progress, breakers, dead letters -------------------------------------------------------


def test_progress_tracker_times_a_stall_from_the_last_progress() -> None:
    t = ProgressTracker()
    assert t.observe("send", 100, 5, now=0.0) == (None, 0.0)
    assert t.observe("send", 110, 5, now=2.0) == (5.0, 0.0)  # progress
    assert t.observe("send", 110, 5, now=5.0) == (0.0, 3.0)  # no progress since t=2
    assert t.observe("send", 110, 5, now=9.0) == (0.0, 7.0)
    assert t.observe("send", 110, 0, now=10.0) == (0.0, 0.0)  # no lag: not stalled
    assert t.observe("send", 110, 3, now=12.0) == (0.0, 2.0)
    assert t.observe("send", 50, 3, now=13.0) == (None, 0.0)  # offsets reset (a replay)


def test_breaker_watch_times_how_long_a_breaker_has_not_closed() -> None:
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    breaker = CircuitBreaker(
        "sms-http", BreakerConfig(window=2, min_calls=2, reset_timeout=10.0), clock=clock
    )
    watch = BreakerWatch(clock=clock)
    assert watch.status("sms", breaker) == BreakerStatus(
        "sms", "closed", "sms-http", None, 0.0, 0.0, 0
    )
    now[0] = 5.0
    breaker.record_failure()
    breaker.record_failure()  # opens at t=5
    now[0] = 12.0
    status = watch.status("sms", breaker)
    assert (status.state, status.not_closed_for_s, status.opened_count) == ("open", 7.0, 1)
    now[0] = 16.0  # past the reset timeout: half-open, still not closed
    assert watch.status("sms", breaker).state == "half_open"
    assert watch.status("sms", breaker).not_closed_for_s == 11.0
    breaker.before_call()
    breaker.record_success()  # the probe closes it
    assert watch.status("sms", breaker).not_closed_for_s is None
    assert BreakerStatus.from_dict(json.loads(json.dumps(status.__dict__))) == status


def test_dead_letters_add_up_by_stage_and_campaign() -> None:
    summary = summarize_dead_letters(
        [
            DeadLetterRow("enrich", "c1", 5, 2),
            DeadLetterRow("enrich", None, 1, 1),
            DeadLetterRow("send", "c1", 3, 0),
        ],
        source="postgres",
        window_s=10.0,
    )
    assert (summary.total, summary.recent) == (9, 3)
    assert summary.by_stage["enrich"] == DeadLetterCounts(6, 3)
    assert summary.for_campaign("c1") == {
        "enrich": DeadLetterCounts(5, 2),
        "send": DeadLetterCounts(3, 0),
    }
    assert summary.rate_per_s("enrich") == pytest.approx(0.3)
    assert summary.rate_per_s() == pytest.approx(0.3)


# --- the checks --------------------------------------------------------------------------


def report(**overrides: object) -> HealthReport:
    base: dict[str, object] = {
        "source": "cli",
        "checked_at": NOW,
        "kafka": ServiceStatus(True),
        "postgres": ServiceStatus(True),
        "worker": ServiceStatus(True, url="http://127.0.0.1:1"),
        "stages": {s: StageQueue(s, f"t-{s}", 0) for s in STAGES},
        "breakers": {"sms": BreakerStatus("sms", "closed")},
        "dead_letters": summarize_dead_letters([], source="postgres", window_s=100.0),
        "campaigns": (),
        "settings": HealthSettings(),
    }
    base.update(overrides)
    return HealthReport(**base)  # type: ignore[arg-type]


def test_a_quiet_system_is_healthy() -> None:
    r = report()
    assert evaluate(r) == ()
    assert (r.healthy, r.exit_code, r.http_status) == (True, 0, 200)


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        ({"kafka": ServiceStatus(False, "down")}, "kafka_unreachable"),
        ({"postgres": ServiceStatus(False, "down")}, "postgres_unreachable"),
        ({"worker": ServiceStatus(False, "refused", "http://w")}, "worker_unreachable"),
        (
            {"stages": {"send": StageQueue("send", "t", 4, stalled_for_s=61.0)}},
            "stage_stalled",
        ),
        (
            {"breakers": {"sms": BreakerStatus("sms", "open", not_closed_for_s=121.0)}},
            "breaker_open",
        ),
        (
            {
                "dead_letters": summarize_dead_letters(
                    [DeadLetterRow("enrich", None, 500, 101)], source="topic", window_s=100.0
                )
            },
            "dead_letter_rate",
        ),
    ],
)
def test_each_check_makes_the_report_unhealthy(overrides: dict[str, object], check: str) -> None:
    problems = evaluate(report(**overrides))
    assert [p.check for p in problems] == [check]
    r = replace(report(**overrides), problems=problems)
    assert (r.healthy, r.exit_code, r.http_status) == (False, 1, 503)


@pytest.mark.parametrize(
    "overrides",
    [
        {"stages": {"send": StageQueue("send", "t", 4, stalled_for_s=59.0)}},  # not long enough
        {"stages": {"send": StageQueue("send", "t", 0, stalled_for_s=0.0)}},
        {"breakers": {"sms": BreakerStatus("sms", "open", not_closed_for_s=100.0)}},
        {"breakers": {"sms": BreakerStatus.unknown("sms")}},
        {
            "dead_letters": summarize_dead_letters(
                [DeadLetterRow("enrich", None, 500, 100)], source="topic", window_s=100.0
            )
        },
        {"worker": None},  # not asked
    ],
)
def test_below_the_thresholds_is_healthy(overrides: dict[str, object]) -> None:
    assert evaluate(report(**overrides)) == ()


def test_stuck_leads_above_the_allowance_are_a_problem() -> None:
    from streams.clock import CampaignClock

    facts = CampaignFacts(
        campaign("c-stuck"), "active", (row(State.QUALIFIED, 2, idle=True),), 0, 0, None
    )
    health = build_campaign(
        facts,
        clock=CampaignClock.realtime(),
        lag=NO_LAG,
        limits=limits(None),
        dead_letters={},
        window_s=60.0,
    )
    assert health.stuck == 2
    assert [p.check for p in evaluate(report(campaigns=(health,)))] == ["stuck_leads"]
    lenient = report(campaigns=(health,), settings=HealthSettings(max_stuck=2))
    assert evaluate(lenient) == ()


def test_the_json_document_is_serializable_and_says_why() -> None:
    r = report(worker=ServiceStatus(False, "refused", "http://w"))
    r = replace(r, problems=evaluate(r))
    doc = json.loads(json.dumps(r.to_dict()))
    assert doc["healthy"] is False and doc["status"] == "unhealthy"
    assert doc["problems"][0]["check"] == "worker_unreachable"
    assert set(doc["stages"]) == set(STAGES)
    assert doc["stages"]["send"]["breakers"] == {"sms": "closed"}
    assert doc["thresholds"]["stall_s"] == 60.0
    text = "\n".join(render_text(r))
    assert "UNHEALTHY (1 problem)" in text and "worker http://w UNREACHABLE" in text


def test_settings_come_from_the_environment_and_are_checked() -> None:
    hs = HealthSettings.from_env({"LEADFLOW_HEALTH_STALL_S": "5", "LEADFLOW_HEALTH_MAX_STUCK": "3"})
    assert (hs.stall_s, hs.max_stuck) == (5.0, 3)
    with pytest.raises(ConfigError, match="LEADFLOW_HEALTH_STALL_S"):
        HealthSettings.from_env({"LEADFLOW_HEALTH_STALL_S": "0"})
    with pytest.raises(ConfigError, match="LEADFLOW_HEALTH_MAX_STUCK"):
        HealthSettings.from_env({"LEADFLOW_HEALTH_MAX_STUCK": "-1"})
    assert all(env.startswith("LEADFLOW_HEALTH_") for env, _, _ in settings_table(HealthSettings))
    assert hs.default_worker_url(Settings(web_port=7001)) == "http://127.0.0.1:7001"


def test_an_unreachable_worker_is_reported_not_raised() -> None:
    view = fetch_worker("http://127.0.0.1:1", timeout_s=1.0)
    assert not view.status.ok and view.status.url == "http://127.0.0.1:1"
    assert view.breakers == {}
    assert not fetch_worker("file:///etc/passwd", 1.0).status.ok


# --- the readers, on real Postgres and Kafka -------------------------------------------------


def seed(dsn: str, campaign_id: str, *, stale: bool) -> None:
    """Leads in each position: queued, released, sent, stuck, terminal."""
    now = datetime.now(UTC)  # no clock anchor in a fresh test database? it may have one
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM wall_anchor), extract(epoch FROM campaign_anchor), scale "
            "FROM clock_anchor"
        ).fetchone()
        campaign_now = now
        if row is not None:
            campaign_now = datetime.fromtimestamp(
                float(row[1]) + (now.timestamp() - float(row[0])) * float(row[2]), UTC
            )
        scale = float(row[2]) if row is not None else 1.0
        old = campaign_now - timedelta(seconds=3600 * scale) if stale else campaign_now
        leads = [
            ("q1", "in_sequence", 2),
            ("q2", "in_sequence", 2),
            ("r1", "in_sequence", 1),
            ("s1", "in_sequence", 1),
            ("u1", "in_sequence", 3),
            ("n1", "qualified", 0),
            ("d1", "completed", 4),
            ("x1", "invalid", 0),
        ]
        conn.cursor().executemany(
            "INSERT INTO leads (campaign_id, lead_id, state, touch, updated_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(campaign_id, lead, state, touch, old) for lead, state, touch in leads],
        )
        conn.cursor().executemany(
            "INSERT INTO pending_touches (campaign_id, lead_id, touch, kafka_partition, channel, "
            "priority, due_at, payload, emitted_at) VALUES (%s, %s, %s, 0, %s, 1, %s, '', %s)",
            [
                (campaign_id, "q1", 2, "voice", campaign_now - timedelta(minutes=1), None),
                (campaign_id, "q2", 2, "voice", campaign_now + timedelta(days=1), None),
                (campaign_id, "r1", 1, "sms", campaign_now, now - timedelta(hours=2)),
                (campaign_id, "s1", 1, "sms", campaign_now, now - timedelta(hours=2)),
            ],
        )
        conn.execute(
            "INSERT INTO send_ledger (campaign_id, lead_id, touch, channel, idempotency_key, "
            "status, claimed_at) VALUES (%s, 's1', 1, 'sms', %s, 'accepted', %s)",
            (campaign_id, f"{campaign_id}-s1-1", now - timedelta(hours=2)),
        )
        conn.cursor().executemany(
            "INSERT INTO lead_transitions (campaign_id, lead_id, version, to_state, occurred_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            [
                (campaign_id, "d1", 9, "completed", campaign_now),
                (campaign_id, "x1", 2, "invalid", campaign_now),
                (campaign_id, "n1", 1, "new", campaign_now - timedelta(seconds=10 * scale)),
            ],
        )


def test_read_campaigns_places_every_lead(dsn: str, settings: Settings) -> None:
    cid = f"hc-{uuid.uuid4().hex[:8]}"
    CampaignStore(dsn).create(campaign(cid))
    seed(dsn, cid, stale=True)
    hs = HealthSettings()
    with psycopg.connect(dsn, autocommit=True) as conn:
        clock, [facts] = read_campaigns(conn, settings, hs, cid)
        with pytest.raises(CampaignNotFoundError):
            read_campaigns(conn, settings, hs, "no-such-campaign")
        _, everyone = read_campaigns(conn, settings, hs)
    assert cid in {f.campaign.id for f in everyone}  # active campaigns by default
    by = {(r.state, r.step, r.touch): r for r in facts.rows}
    queued = by[(State.IN_SEQUENCE, Step.QUEUED, 2)]
    assert (queued.count, queued.due) == (2, 1)
    assert by[(State.IN_SEQUENCE, Step.RELEASED, 1)].count == 1
    assert by[(State.IN_SEQUENCE, Step.SENT, 1)].count == 1
    assert by[(State.IN_SEQUENCE, Step.UNQUEUED, 3)].count == 1
    assert all(r.idle for r in facts.rows)
    assert (facts.finished_in_window, facts.completed_in_window) == (2, 1)
    health = build_campaign(
        facts,
        clock=clock,
        lag=NO_LAG,
        limits=limits(None),
        dead_letters={},
        window_s=hs.window_s,
    )
    assert health.stages["schedule"] == StageCounts(active=1 + 2 + 1)
    assert health.stages["send"] == StageCounts(active=1)
    assert health.stages["sequence"] == StageCounts(active=1, completed=1)
    # stuck: qualified, released, sent (their stages have no lag) and the unqueued one
    assert health.stuck == 4
    fresh = f"hc-{uuid.uuid4().hex[:8]}"
    CampaignStore(dsn).create(campaign(fresh))
    seed(dsn, fresh, stale=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        _, [recent] = read_campaigns(conn, settings, hs, fresh)
    assert not any(r.idle for r in recent.rows)


def dead_letter(stage: str, campaign_id: str | None, offset: int) -> dict[str, object]:
    return {
        "original_topic": "raw",
        "original_partition": 0,
        "original_offset": offset,
        "original_key": None,
        "stage": stage,
        "reason": "schema_mismatch",
        "error_class": "SchemaMismatchError",
        "error_message": "bad",
        "attempt": 1,
        "payload": b"x",
        "campaign_id": campaign_id,
        "lead_id": None,
        "failed_at": datetime.now(UTC),
        "history": [],
    }


def test_dead_letters_come_from_the_table_when_it_has_rows_else_the_topic(
    isolated: tuple[Settings, dict[str, str]], dsn: str
) -> None:
    settings, _ = isolated
    ensure_topics(settings)
    topic = settings.topic_name("dead-letter")
    codec = AvroCodec("leadflow.DeadLetter", subject=topic)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for i, (stage, cid) in enumerate([("enrich", "c1"), ("enrich", None), ("send", "c1")]):
        producer.produce(topic, key=b"k", value=codec.encode(dead_letter(stage, cid, i)))
    producer.flush(10)
    hs = HealthSettings(timeout_s=5.0)
    with psycopg.connect(dsn, autocommit=True) as conn:
        source, rows = read_dead_letter_rows(conn, settings, hs)
        assert source == "topic"
        summary = summarize_dead_letters(rows, source=source, window_s=hs.window_s)
        assert summary.by_stage == {
            "enrich": DeadLetterCounts(2, 2),
            "send": DeadLetterCounts(1, 1),
        }
        assert summary.for_campaign("c1") == {
            "enrich": DeadLetterCounts(1, 1),
            "send": DeadLetterCounts(1, 1),
        }
        conn.execute(
            "INSERT INTO dead_letters (original_topic, original_partition, original_offset, "
            "stage, reason, error_class, error_message, attempt, campaign_id, payload, failed_at) "
            "VALUES (%s, 0, 1, 'score', 'x', 'X', 'x', 1, 'c2', '', %s), "
            "(%s, 0, 2, 'score', 'x', 'X', 'x', 1, 'c2', '', %s), "
            "('other-raw', 0, 3, 'score', 'x', 'X', 'x', 1, 'c2', '', %s)",
            (
                settings.topic_name("raw"),
                datetime.now(UTC),
                settings.topic_name("raw"),
                datetime.now(UTC) - timedelta(days=1),
                datetime.now(UTC),
            ),
        )
        source, rows = read_dead_letter_rows(conn, settings, hs)
    assert source == "postgres"
    assert rows == [DeadLetterRow("score", "c2", 2, 1)]  # only our topics' rows


def test_collect_measures_lag_and_progress_between_two_samples(
    isolated: tuple[Settings, dict[str, str]], dsn: str
) -> None:
    settings, _ = isolated
    ensure_topics(settings)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for i in range(6):
        producer.produce(settings.topic_name("enriched"), key=b"k%d" % i, value=b"v")
    producer.flush(10)
    cid = f"hc-{uuid.uuid4().hex[:8]}"
    CampaignStore(dsn).create(campaign(cid))
    slept: list[float] = []
    r = collect(
        settings,
        HealthSettings(timeout_s=5.0),
        providers=ProviderSettings.from_env({}),
        campaign_id=cid,
        sample_s=0.5,
        sleep=slept.append,
    )
    assert slept and 0 <= slept[0] <= 0.5
    assert r.stages["score"].lag == 6 and r.stages["enrich"].lag == 0
    assert r.stages["score"].throughput_per_s == 0.0  # nobody consumes
    assert r.stages["score"].drain_eta_s is None
    assert r.kafka.ok and r.postgres.ok and r.worker is None
    assert [c.campaign_id for c in r.campaigns] == [cid]
    assert {b.state for b in r.breakers.values()} == {"unknown"}
    assert r.healthy, r.problems
