"""streams/metrics.py: naming conventions, the helper API, and what providers report.

No broker and no Postgres: the registry is leadflow's own, so each test reads
the values it changed (labels unique to the test) and nothing else leaks in.
"""

from __future__ import annotations

import gc
import random
import re
import uuid
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from providers.breaker import BreakerConfig, CircuitBreaker
from providers.cost import Charge, CostLedger
from providers.errors import DailyCapReachedError, RateLimitedError
from providers.guard import Attempt, Guard
from providers.ratelimit import Rate, RateLimiter
from providers.retry import RetryPolicy
from streams import metrics
from streams.errors import DatabaseUnavailableError

FORBIDDEN_LABELS = {"lead", "lead_id", "phone", "email", "name", "identity", "identity_key"}


def value(name: str, **labels: str) -> float:
    """A sample of leadflow's registry (0 when absent)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class Clock:
    """Monotonic test time with an awaitable sleep that just advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def _exercise_everything() -> None:
    """Put at least one sample in every pushed family."""
    stage = metrics.StageMetrics(unique("stage"))
    stage.error("database_unavailable")
    stage.batch_done(
        records=2, dead_letter_reasons=["bad_payload"], taken_at=0.0, event_timestamps=[1.0]
    )
    metrics.provider_attempt("p-all", "rate_limited", 0.1)
    metrics.provider_backpressure("p-all", "circuit_open")
    metrics.provider_breaker_transition("p-all", "open")
    metrics.provider_cost("p-all", 1.0)
    metrics.provider_cache_hits("p-all", 1)
    with metrics.sink_flush("s-all", 1):
        pass
    with pytest.raises(ValueError), metrics.sink_flush("s-all", 1):
        raise ValueError("boom")
    metrics.sink_backpressure("s-all")
    metrics.poll_failed("p-all", RuntimeError())


def test_every_family_follows_the_naming_conventions() -> None:
    _exercise_everything()
    breaker = CircuitBreaker(unique("b"))
    limiter = RateLimiter(unique("l"), Rate(5, 1.0), daily_cap=10)
    families = list(metrics.REGISTRY.collect())
    assert len(families) > 30
    for family in families:
        assert family.name.startswith("leadflow_"), family.name
        # base units only: seconds and bytes, never milliseconds or kilobytes
        assert not re.search(
            r"_(ms|milliseconds|us|minutes|hours|kb|mb|kilobytes)(_|$)", family.name
        )
        if family.type == "histogram":  # durations in seconds, or a count of records
            assert family.name.endswith(("_seconds", "_records")), family.name
        if family.name.startswith(("leadflow_consumer", "leadflow_pending", "leadflow_campaign")):
            continue  # polled snapshots: checked below, empty until a poll ran
        if family.name == "leadflow_metrics_poll_timestamp_seconds":
            continue
        assert family.samples, f"{family.name} has no samples: no helper feeds it"
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            assert not FORBIDDEN_LABELS & set(sample.labels), sample
    snapshots = [
        metrics.CONSUMER_LAG,
        metrics.PENDING_TOUCHES,
        metrics.CAMPAIGN_LEADS,
        metrics.CAMPAIGN_COMPLETION,
        metrics.CAMPAIGN_SENDS,
        metrics.CAMPAIGN_COST_UNITS,
        metrics.METRICS_POLL_TIMESTAMP,
    ]
    for snapshot in snapshots:
        assert snapshot.name.startswith("leadflow_")
        assert not snapshot.name.endswith("_total")  # gauges
        assert not FORBIDDEN_LABELS & set(snapshot.labelnames), snapshot.name
    del breaker, limiter


def test_counters_are_exposed_with_total_suffix() -> None:
    _exercise_everything()
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    parsed = {f.name: f.type for f in text_string_to_metric_families(text)}
    counters = [name for name, kind in parsed.items() if kind == "counter"]
    assert "leadflow_stage_records" in counters
    for name in counters:
        assert f"# TYPE {name}_total counter" in text, name
    assert re.search(r"^leadflow_stage_records_total\{", text, re.M)


# --- stages ------------------------------------------------------------------------------


def test_stage_batch_counts_outcomes_dead_letters_and_latencies() -> None:
    name = unique("stage")
    stage = metrics.StageMetrics(name)
    stage.batch_done(
        records=5,
        dead_letter_reasons=["not_single_object", "unknown_campaign"],
        taken_at=100.0,
        event_timestamps=[1000.0, 990.0, None, 0.0, 1001.0],
        now_monotonic=100.25,
        now_wall=1000.5,
    )
    assert value("leadflow_stage_records_total", stage=name, outcome="ok") == 3
    assert value("leadflow_stage_records_total", stage=name, outcome="dead_letter") == 2
    assert value("leadflow_dead_letters_total", stage=name, reason="unknown_campaign") == 1
    assert value("leadflow_stage_errors_total", stage=name, error="not_single_object") == 1
    assert value("leadflow_stage_processing_seconds_count", stage=name) == 1
    assert value("leadflow_stage_processing_seconds_sum", stage=name) == pytest.approx(0.25)
    assert value("leadflow_stage_batch_records_sum", stage=name) == 5
    # three records had a timestamp: 0.5 s, 10.5 s, and one in the future (counted as 0)
    assert value("leadflow_stage_event_latency_seconds_count", stage=name) == 3
    assert value("leadflow_stage_event_latency_seconds_sum", stage=name) == pytest.approx(11.0)
    assert value("leadflow_stage_event_latency_seconds_bucket", stage=name, le="1.0") == 2


def test_stage_error_counts_by_reason() -> None:
    stage = metrics.StageMetrics(unique("stage"))
    stage.error("database_unavailable")
    stage.error("database_unavailable", 2)
    stage.error("ignored", 0)
    assert (
        value("leadflow_stage_errors_total", stage=stage.stage, error="database_unavailable") == 3
    )
    assert value("leadflow_stage_errors_total", stage=stage.stage, error="ignored") == 0


def test_label_reason_is_our_reason_or_unexpected() -> None:
    assert metrics.label_reason(DatabaseUnavailableError("x")) == "database_unavailable"
    assert metrics.label_reason(KeyError("+14155550100")) == "unexpected"


# --- sinks -------------------------------------------------------------------------------


def test_sink_flush_times_successes_and_failures() -> None:
    sink = unique("sink")
    with metrics.sink_flush(sink, 7):
        pass
    with pytest.raises(DatabaseUnavailableError), metrics.sink_flush(sink, 3):
        raise DatabaseUnavailableError("down")
    assert value("leadflow_sink_flush_seconds_count", sink=sink) == 2
    assert value("leadflow_sink_records_total", sink=sink) == 7
    assert value("leadflow_sink_flush_errors_total", sink=sink, error="database_unavailable") == 1
    metrics.sink_backpressure(sink)
    metrics.sink_backpressure(sink)
    assert value("leadflow_sink_backpressure_total", sink=sink) == 2


# --- snapshots ---------------------------------------------------------------------------


def test_snapshot_replaces_its_whole_series_set() -> None:
    registry = CollectorRegistry()
    snap = metrics.Snapshot("leadflow_test_things", "Things.", ["kind"], registry=registry)
    snap.replace({("a",): 1, ("b",): 2})
    assert registry.get_sample_value("leadflow_test_things", {"kind": "b"}) == 2
    snap.replace({("a",): 5})
    assert registry.get_sample_value("leadflow_test_things", {"kind": "a"}) == 5
    assert registry.get_sample_value("leadflow_test_things", {"kind": "b"}) is None
    assert snap.value("a") == 5
    with pytest.raises(ValueError):
        snap.replace({("a", "extra"): 1})


def test_poll_bookkeeping() -> None:
    metrics.poll_succeeded("unit", at=1234.0)
    assert value("leadflow_metrics_poll_timestamp_seconds", poller="unit") == 1234.0
    before = value("leadflow_metrics_poll_errors_total", poller="unit", error="unexpected")
    metrics.poll_failed("unit", OSError())
    after = value("leadflow_metrics_poll_errors_total", poller="unit", error="unexpected")
    assert after == before + 1


def test_process_memory_is_reported_in_bytes() -> None:
    assert value("leadflow_process_resident_memory_bytes") > 1_000_000


# --- providers ---------------------------------------------------------------------------


def test_breaker_state_is_read_at_scrape_time() -> None:
    clock = Clock()
    name = unique("prov")
    breaker = CircuitBreaker(
        name, BreakerConfig(window=2, min_calls=2, reset_timeout=30.0), clock=clock
    )
    assert value("leadflow_provider_breaker_state", provider=name) == 0
    breaker.record_failure()
    breaker.record_failure()
    assert value("leadflow_provider_breaker_state", provider=name) == 2
    assert value("leadflow_provider_breaker_transitions_total", provider=name, state="open") == 1
    clock.now += 31  # nobody calls; the scrape itself sees the breaker half-open
    assert value("leadflow_provider_breaker_state", provider=name) == 1
    assert (
        value("leadflow_provider_breaker_transitions_total", provider=name, state="half_open") == 1
    )


def test_dead_breakers_and_limiters_drop_out() -> None:
    name = unique("gone")
    breaker = CircuitBreaker(name)
    limiter = RateLimiter(name, Rate(10, 1.0))
    state = metrics.REGISTRY.get_sample_value("leadflow_provider_breaker_state", {"provider": name})
    assert state == 0
    assert value("leadflow_provider_quota_limit", account=name, period="window") == 10
    del breaker, limiter
    gc.collect()
    assert (
        metrics.REGISTRY.get_sample_value("leadflow_provider_breaker_state", {"provider": name})
        is None
    )
    assert (
        metrics.REGISTRY.get_sample_value(
            "leadflow_provider_quota_limit", {"account": name, "period": "window"}
        )
        is None
    )


async def test_limiter_quota_remaining_per_window_and_day() -> None:
    clock = Clock()
    account = unique("acct")
    limiter = RateLimiter(account, Rate(5, 1.0), daily_cap=3, clock=clock, sleep=clock.sleep)
    assert value("leadflow_provider_quota_remaining", account=account, period="window") == 5
    assert value("leadflow_provider_quota_remaining", account=account, period="day") == 3
    await limiter.acquire()
    await limiter.acquire()
    assert value("leadflow_provider_quota_remaining", account=account, period="window") == 3
    assert value("leadflow_provider_quota_remaining", account=account, period="day") == 1
    assert value("leadflow_provider_quota_limit", account=account, period="day") == 3
    assert value("leadflow_provider_limiter_grants_total", account=account) == 2
    clock.now += 2.0  # the window has passed; the day has not
    assert value("leadflow_provider_quota_remaining", account=account, period="window") == 5
    assert value("leadflow_provider_quota_remaining", account=account, period="day") == 1


def test_limiter_without_limits_reports_no_quota() -> None:
    account = unique("free")
    limiter = RateLimiter(account, None)
    assert (
        metrics.REGISTRY.get_sample_value(
            "leadflow_provider_quota_remaining", {"account": account, "period": "window"}
        )
        is None
    )
    assert value("leadflow_provider_limiter_grants_total", account=account) == 0
    del limiter


def _op(*outcomes: Exception | str) -> Callable[[Attempt], Awaitable[str]]:
    queue = list(outcomes)

    async def op(attempt: Attempt) -> str:
        outcome = queue.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return op


async def test_guard_counts_attempts_429s_and_cost() -> None:
    clock = Clock()
    name = unique("sms")
    guard = Guard(
        name,
        breaker=CircuitBreaker(name, clock=clock),
        retry=RetryPolicy(rng=random.Random(1)),
        clock=clock,
        sleep=clock.sleep,
    )
    op = _op(RateLimitedError(name, "slow down", status=429, retry_after=1.0), "ok")
    result = await guard.call(
        op, charge=lambda _: [Charge("camp-1", 2.0)], side_effect=True, idempotency_key="k"
    )
    assert result == "ok"
    assert value("leadflow_provider_calls_total", provider=name, outcome="rate_limited") == 1
    assert value("leadflow_provider_calls_total", provider=name, outcome="ok") == 1
    assert value("leadflow_provider_rate_limited_total", provider=name) == 1
    assert value("leadflow_provider_call_seconds_count", provider=name) == 2
    assert value("leadflow_provider_cost_units_total", provider=name) == 2.0


async def test_guard_counts_local_refusals_as_backpressure() -> None:
    clock = Clock()
    name = unique("voice")
    limiter = RateLimiter(name, None, daily_cap=1, clock=clock, sleep=clock.sleep)
    guard = Guard(name, limiter=limiter, clock=clock, sleep=clock.sleep)
    await guard.call(_op("ok"), charge=lambda _: [], side_effect=False)
    with pytest.raises(DailyCapReachedError):
        await guard.call(_op("ok"), charge=lambda _: [], side_effect=False)
    assert value("leadflow_provider_backpressure_total", provider=name, reason="daily_cap") == 1
    assert value("leadflow_provider_calls_total", provider=name, outcome="ok") == 1


def test_cost_ledger_feeds_cost_and_cache_metrics() -> None:
    name = unique("enrich")
    ledger = CostLedger()
    ledger.charge(name, [Charge("c1", 0.5), Charge("c2", 1.0, items=3)])
    ledger.record_cache_hits(name, "c1", 4, 2.0)
    ledger.record_cache_hits(name, "c1", 0, 0.0)
    assert value("leadflow_provider_cost_units_total", provider=name) == pytest.approx(1.5)
    assert value("leadflow_provider_cache_hits_total", provider=name) == 4
    assert ledger.snapshot().by_provider[name].units == pytest.approx(1.5)  # unchanged
