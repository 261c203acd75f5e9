"""Every Prometheus metric leadflow exports, on one registry of its own.

The worker serves :func:`render` at ``/metrics`` (``agents/web_metrics.py``).
docs/METRICS.md lists each family with its labels, meaning and what to
alert on. Conventions, checked by a test that walks :data:`REGISTRY`:

* every name starts with ``leadflow_``; durations are seconds, sizes bytes;
* counters end in ``_total``;
* labels are bounded: stage, provider, account, channel, reason, outcome,
  topic, partition, sink, campaign id. Never a lead id or contact data.

Three kinds of metrics live here:

* **pushed**: counters and histograms updated where things happen (the stage
  runner, the provider guard, the sinks through :func:`sink_flush` and
  :func:`sink_backpressure`);
* **pulled at scrape time**: circuit-breaker states and rate-limiter quotas,
  read from the live breakers and limiters (:func:`track_breaker`,
  :func:`track_limiter`; weak references, so nothing is kept alive);
* **polled**: consumer lag, pending touches and per-campaign figures, which
  cost a broker or Postgres round trip. A background task sets them with
  :meth:`Snapshot.replace` every few seconds; a scrape only reads the last
  snapshot, so a scrape never blocks on Kafka or Postgres.

:data:`REGISTRY` is not prometheus-client's global default registry, so
nothing else in the process (or another test) adds families to it.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.errors import LeadflowError
from streams.settings import setting

__all__ = [
    "BREAKER_STATE_VALUES",
    "CAMPAIGN_COMPLETION",
    "CAMPAIGN_COST_UNITS",
    "CAMPAIGN_LEADS",
    "CAMPAIGN_SENDS",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "METRICS_POLL_ERRORS",
    "METRICS_POLL_TIMESTAMP",
    "PENDING_TOUCHES",
    "PENDING_TOUCH_BUCKETS",
    "PROCESS",
    "PROVIDER_BACKPRESSURE",
    "PROVIDER_BREAKER_TRANSITIONS",
    "PROVIDER_CACHE_HITS",
    "PROVIDER_CALLS",
    "PROVIDER_CALL_SECONDS",
    "PROVIDER_COST_UNITS",
    "PROVIDER_RATE_LIMITED",
    "REGISTRY",
    "SINK_BACKPRESSURE",
    "SINK_FLUSH_ERRORS",
    "SINK_FLUSH_SECONDS",
    "SINK_RECORDS",
    "STAGE_BATCH_RECORDS",
    "STAGE_ERRORS",
    "STAGE_EVENT_LATENCY",
    "STAGE_PROCESSING_SECONDS",
    "STAGE_RECORDS",
    "MetricsSettings",
    "Snapshot",
    "StageMetrics",
    "label_reason",
    "poll_failed",
    "poll_succeeded",
    "provider_attempt",
    "provider_backpressure",
    "provider_breaker_transition",
    "provider_cache_hits",
    "provider_cost",
    "render",
    "sink_backpressure",
    "sink_flush",
    "track_breaker",
    "track_limiter",
]

#: The registry ``/metrics`` renders (not the process-global default).
REGISTRY = CollectorRegistry(auto_describe=True)

#: Seconds, from a few milliseconds to an hour: stage latencies can grow with lag.
LATENCY_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
#: Seconds, for one provider call or one sink flush.
CALL_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
#: Records per batch.
BATCH_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)

#: ``leadflow_provider_breaker_state`` values.
BREAKER_STATE_VALUES: Final[Mapping[str, int]] = {"closed": 0, "half_open": 1, "open": 2}

#: ``due`` label values of ``leadflow_pending_touches``, nearest first.
PENDING_TOUCH_BUCKETS: Final = ("overdue", "next_1m", "next_1h", "next_1d", "later")


@dataclass(frozen=True)
class MetricsSettings:
    """How often the worker refreshes the polled metrics (lag, Postgres figures)."""

    metrics_interval_s: float = setting(
        5.0,
        "LEADFLOW_METRICS_INTERVAL",
        "Seconds between consumer-lag polls for /metrics; 0 turns the polls off.",
    )
    metrics_db_interval_s: float = setting(
        15.0,
        "LEADFLOW_METRICS_DB_INTERVAL",
        "Seconds between the Postgres polls for /metrics (pending touches, campaigns); "
        "0 turns them off.",
    )
    metrics_max_campaigns: int = setting(
        50,
        "LEADFLOW_METRICS_MAX_CAMPAIGNS",
        "Per-campaign metrics cover at most this many active or paused campaigns (newest).",
    )


def label_reason(exc: BaseException) -> str:
    """A short, label-safe reason for ``exc`` (our errors' ``reason``, else ``unexpected``)."""
    if isinstance(exc, LeadflowError):
        return exc.reason
    return "unexpected"


# --- stages ------------------------------------------------------------------------------

STAGE_RECORDS = Counter(
    "leadflow_stage_records_total",
    "Input records a stage finished with (outputs durable), by outcome: ok or dead_letter.",
    ["stage", "outcome"],
    registry=REGISTRY,
)
STAGE_ERRORS = Counter(
    "leadflow_stage_errors_total",
    "Errors a stage met, by label-safe reason: one per held-and-retried batch, per batch "
    "re-run item by item, per failed produce, and per record dead-lettered.",
    ["stage", "error"],
    registry=REGISTRY,
)
STAGE_EVENT_LATENCY = Histogram(
    "leadflow_stage_event_latency_seconds",
    "From an input record's Kafka timestamp until the stage's outputs for it were durable.",
    ["stage"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
STAGE_PROCESSING_SECONDS = Histogram(
    "leadflow_stage_processing_seconds",
    "From the runner taking a batch off the stream until its outputs were durable "
    "(one observation per batch).",
    ["stage"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
STAGE_BATCH_RECORDS = Histogram(
    "leadflow_stage_batch_records",
    "Records per batch a stage took off its stream.",
    ["stage"],
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "leadflow_dead_letters_total",
    "Records written to the dead-letter topic, by the stage that failed and the reason.",
    ["stage", "reason"],
    registry=REGISTRY,
)


class StageMetrics:
    """The stage families with one stage's label bound (the runner's hot path)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._ok = STAGE_RECORDS.labels(stage, "ok")
        self._dead = STAGE_RECORDS.labels(stage, "dead_letter")
        self._event_latency = STAGE_EVENT_LATENCY.labels(stage)
        self._processing = STAGE_PROCESSING_SECONDS.labels(stage)
        self._batch = STAGE_BATCH_RECORDS.labels(stage)

    def error(self, error: str, count: int = 1) -> None:
        """Count ``count`` errors of label-safe kind ``error``."""
        if count > 0:
            STAGE_ERRORS.labels(self.stage, error).inc(count)

    def batch_done(
        self,
        *,
        records: int,
        dead_letter_reasons: Sequence[str],
        taken_at: float,
        event_timestamps: Iterable[float | None],
        now_monotonic: float | None = None,
        now_wall: float | None = None,
    ) -> None:
        """A batch of ``records`` is durable; ``dead_letter_reasons`` of them were dead-lettered.

        ``taken_at`` is the monotonic time the runner took the batch;
        ``event_timestamps`` are the records' Kafka timestamps (unix seconds,
        None when unknown).
        """
        done = time.monotonic() if now_monotonic is None else now_monotonic
        wall = time.time() if now_wall is None else now_wall
        dead = len(dead_letter_reasons)
        if records - dead > 0:
            self._ok.inc(records - dead)
        if dead:
            self._dead.inc(dead)
            for reason in dead_letter_reasons:
                DEAD_LETTERS.labels(self.stage, reason).inc()
                STAGE_ERRORS.labels(self.stage, reason).inc()
        self._batch.observe(records)
        self._processing.observe(max(0.0, done - taken_at))
        observe = self._event_latency.observe
        for ts in event_timestamps:
            if ts:  # None or 0: no timestamp
                observe(max(0.0, wall - ts))


# --- providers ---------------------------------------------------------------------------

PROVIDER_CALLS = Counter(
    "leadflow_provider_calls_total",
    "Provider requests (attempts), by outcome: ok or the error's reason (rate_limited = 429).",
    ["provider", "outcome"],
    registry=REGISTRY,
)
PROVIDER_CALL_SECONDS = Histogram(
    "leadflow_provider_call_seconds",
    "Duration of one provider request (attempt), whatever its outcome.",
    ["provider"],
    buckets=CALL_BUCKETS,
    registry=REGISTRY,
)
PROVIDER_RATE_LIMITED = Counter(
    "leadflow_provider_rate_limited_total",
    "Provider answers of 429 Too Many Requests.",
    ["provider"],
    registry=REGISTRY,
)
PROVIDER_BACKPRESSURE = Counter(
    "leadflow_provider_backpressure_total",
    "Calls refused before reaching the provider: circuit_open, throttled (rate-limit wait "
    "too long) or daily_cap.",
    ["provider", "reason"],
    registry=REGISTRY,
)
PROVIDER_BREAKER_TRANSITIONS = Counter(
    "leadflow_provider_breaker_transitions_total",
    "Circuit-breaker state changes, by the state entered.",
    ["provider", "state"],
    registry=REGISTRY,
)
PROVIDER_COST_UNITS = Counter(
    "leadflow_provider_cost_units_total",
    "Cost units charged by successful provider calls (and ambiguous sends).",
    ["provider"],
    registry=REGISTRY,
)
PROVIDER_CACHE_HITS = Counter(
    "leadflow_provider_cache_hits_total",
    "Lookups answered from the enrichment cache instead of the provider.",
    ["provider"],
    registry=REGISTRY,
)


def provider_attempt(provider: str, outcome: str, seconds: float) -> None:
    """One provider request ended with ``outcome`` (``ok`` or an error reason)."""
    PROVIDER_CALLS.labels(provider, outcome).inc()
    PROVIDER_CALL_SECONDS.labels(provider).observe(max(0.0, seconds))
    if outcome == "rate_limited":
        PROVIDER_RATE_LIMITED.labels(provider).inc()


def provider_backpressure(provider: str, reason: str) -> None:
    """A call to ``provider`` was refused locally (breaker, limiter, daily cap)."""
    PROVIDER_BACKPRESSURE.labels(provider, reason).inc()


def provider_breaker_transition(provider: str, state: str) -> None:
    """``provider``'s breaker entered ``state``."""
    PROVIDER_BREAKER_TRANSITIONS.labels(provider, state).inc()


def provider_cost(provider: str, units: float) -> None:
    """``provider`` charged ``units`` of cost."""
    if units > 0:
        PROVIDER_COST_UNITS.labels(provider).inc(units)


def provider_cache_hits(provider: str, hits: int) -> None:
    """``hits`` lookups of ``provider`` were answered from the cache."""
    if hits > 0:
        PROVIDER_CACHE_HITS.labels(provider).inc(hits)


class _Breaker(Protocol):
    name: str

    @property
    def state(self) -> str: ...


class _LimiterStats(Protocol):
    @property
    def calls_per_window(self) -> float: ...
    @property
    def granted(self) -> int: ...
    @property
    def waited_s(self) -> float: ...
    @property
    def daily_limit(self) -> int | None: ...
    @property
    def daily_remaining(self) -> int | None: ...
    @property
    def window_limit(self) -> int: ...
    @property
    def window_remaining(self) -> int: ...


class _Limiter(Protocol):
    name: str

    def stats(self) -> _LimiterStats: ...


_breakers: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_limiters: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def track_breaker(breaker: _Breaker) -> None:
    """Report ``breaker``'s state at every scrape while it lives (latest of a name wins)."""
    _breakers[breaker.name] = breaker


def track_limiter(limiter: _Limiter) -> None:
    """Report ``limiter``'s quotas at every scrape while it lives (latest of a name wins)."""
    _limiters[limiter.name] = limiter


class _ProviderStateCollector(Collector):
    """Breaker states and limiter quotas, read at scrape time."""

    def collect(self) -> Iterable[Metric]:
        state = GaugeMetricFamily(
            "leadflow_provider_breaker_state",
            "Circuit-breaker state per provider: 0 closed, 1 half-open, 2 open.",
            labels=["provider"],
        )
        for name, breaker in sorted(_breakers.items()):
            state.add_metric([name], BREAKER_STATE_VALUES.get(str(breaker.state), 2))
        remaining = GaugeMetricFamily(
            "leadflow_provider_quota_remaining",
            "Calls this worker may still make: period=window (the current rate window) or "
            "day (today's daily cap). Absent for a period without a limit.",
            labels=["account", "period"],
        )
        limit = GaugeMetricFamily(
            "leadflow_provider_quota_limit",
            "This worker's share of the account's limit per period (window or day).",
            labels=["account", "period"],
        )
        granted = CounterMetricFamily(
            "leadflow_provider_limiter_grants",
            "Rate-limit slots granted per account.",
            labels=["account"],
        )
        waited = CounterMetricFamily(
            "leadflow_provider_limiter_wait_seconds",
            "Seconds calls spent waiting for a rate-limit slot, per account.",
            labels=["account"],
        )
        for name, limiter in sorted(_limiters.items()):
            stats = limiter.stats()
            if stats.window_limit:
                remaining.add_metric([name, "window"], stats.window_remaining)
                limit.add_metric([name, "window"], stats.window_limit)
            if stats.daily_limit is not None:
                remaining.add_metric([name, "day"], stats.daily_remaining or 0)
                limit.add_metric([name, "day"], stats.daily_limit)
            granted.add_metric([name], stats.granted)
            waited.add_metric([name], stats.waited_s)
        yield from (state, remaining, limit, granted, waited)

    def describe(self) -> Iterable[Metric]:
        return self.collect()


# --- sinks -------------------------------------------------------------------------------

SINK_FLUSH_SECONDS = Histogram(
    "leadflow_sink_flush_seconds",
    "Duration of one sink flush (a batch written to Postgres), failed flushes included.",
    ["sink"],
    buckets=CALL_BUCKETS,
    registry=REGISTRY,
)
SINK_RECORDS = Counter(
    "leadflow_sink_records_total",
    "Records a sink wrote durably (successful flushes only).",
    ["sink"],
    registry=REGISTRY,
)
SINK_FLUSH_ERRORS = Counter(
    "leadflow_sink_flush_errors_total",
    "Sink flushes that failed, by label-safe reason.",
    ["sink", "error"],
    registry=REGISTRY,
)
SINK_BACKPRESSURE = Counter(
    "leadflow_sink_backpressure_total",
    "Times a sink signalled backpressure (its partitions paused until Postgres catches up).",
    ["sink"],
    registry=REGISTRY,
)


@contextmanager
def sink_flush(sink: str, records: int) -> Iterator[None]:
    """Time one flush of ``records`` records by ``sink``.

    ::

        with metrics.sink_flush("lead_state", len(batch)):
            await write(batch)

    On success the records count as written; on an exception the flush is
    counted as failed (reason from :func:`label_reason`) and the exception
    propagates unchanged. The duration is observed either way.
    """
    started = time.monotonic()
    try:
        yield
    except BaseException as exc:
        SINK_FLUSH_ERRORS.labels(sink, label_reason(exc)).inc()
        raise
    else:
        if records > 0:
            SINK_RECORDS.labels(sink).inc(records)
    finally:
        SINK_FLUSH_SECONDS.labels(sink).observe(time.monotonic() - started)


def sink_backpressure(sink: str) -> None:
    """``sink`` signalled backpressure once (call when it pauses its partitions)."""
    SINK_BACKPRESSURE.labels(sink).inc()


# --- polled snapshots --------------------------------------------------------------------


class Snapshot(Collector):
    """A gauge family whose whole sample set is replaced at once by a poller.

    Series that vanish from the source (a finished campaign, a revoked
    partition) vanish from ``/metrics`` too, unlike a labelled ``Gauge``.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._rows: dict[tuple[str, ...], float] = {}
        if registry is not None:
            registry.register(self)

    def replace(self, rows: Mapping[tuple[str, ...], float]) -> None:
        """Make ``rows`` (label values in ``labelnames`` order -> value) the whole family."""
        for labels in rows:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name}: {labels!r} does not match {self.labelnames!r}")
        self._rows = {tuple(str(v) for v in k): float(v) for k, v in rows.items()}

    def value(self, *labels: str) -> float | None:
        """The current value of one series (None when absent)."""
        return self._rows.get(tuple(labels))

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=list(self.labelnames))
        for labels, value in sorted(self._rows.items()):
            family.add_metric(list(labels), value)
        yield family

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=list(self.labelnames))]


CONSUMER_LAG = Snapshot(
    "leadflow_consumer_lag_records",
    "Records on an input partition the worker group has not committed past "
    "(end offset - committed offset), per stage, topic (unprefixed) and partition.",
    ["stage", "topic", "partition"],
)
PENDING_TOUCHES = Snapshot(
    "leadflow_pending_touches",
    "Queued touches not released yet, by channel and due bucket in campaign-clock time: "
    "overdue, next_1m, next_1h, next_1d, later.",
    ["channel", "due"],
)
CAMPAIGN_LEADS = Snapshot(
    "leadflow_campaign_leads",
    "Leads per campaign and state (active and paused campaigns).",
    ["campaign", "state"],
)
CAMPAIGN_COMPLETION = Snapshot(
    "leadflow_campaign_completion_ratio",
    "Share of a campaign's leads in a terminal state (0..1).",
    ["campaign"],
)
CAMPAIGN_SENDS = Snapshot(
    "leadflow_campaign_sends",
    "Send-ledger rows per campaign, channel and status (claimed, accepted, failed, ...).",
    ["campaign", "channel", "status"],
)
CAMPAIGN_COST_UNITS = Snapshot(
    "leadflow_campaign_cost_units",
    "Cost units a campaign's sends have cost so far, per channel (send ledger).",
    ["campaign", "channel"],
)

METRICS_POLL_ERRORS = Counter(
    "leadflow_metrics_poll_errors_total",
    "Background metric polls that failed (the previous snapshot is kept).",
    ["poller", "error"],
    registry=REGISTRY,
)
METRICS_POLL_TIMESTAMP = Snapshot(
    "leadflow_metrics_poll_timestamp_seconds",
    "Unix time of each poller's last successful poll (lag, postgres).",
    ["poller"],
)
_poll_times: dict[str, float] = {}


def poll_succeeded(poller: str, at: float | None = None) -> None:
    """Record that ``poller`` refreshed its snapshots."""
    _poll_times[poller] = time.time() if at is None else at
    METRICS_POLL_TIMESTAMP.replace({(name,): ts for name, ts in _poll_times.items()})


def poll_failed(poller: str, exc: BaseException) -> None:
    """Count a failed poll of ``poller``."""
    METRICS_POLL_ERRORS.labels(poller, label_reason(exc)).inc()


# --- process and rendering ---------------------------------------------------------------

#: leadflow_process_resident_memory_bytes, _virtual_memory_bytes, _cpu_seconds_total, ...
PROCESS = ProcessCollector(namespace="leadflow", registry=REGISTRY)
PROVIDER_STATE = _ProviderStateCollector()
REGISTRY.register(PROVIDER_STATE)


def render(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The Prometheus text exposition of ``registry`` and its content type.

    The content type is text format 0.0.4, which every Prometheus version reads.
    """
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
