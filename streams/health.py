"""Campaign health: model, checks and readers behind ``leadflow health`` and ``/health``.

docs/HEALTH.md is the user's page (every field, the state-to-stage mapping,
the ETA formula and the exact meaning of "unhealthy"). In short, a
:class:`HealthReport` holds, per stage (``STAGE_INPUT_TOPICS``): the queue
depth (consumer lag), the throughput and how long the stage has had work
without committing progress, its dead letters and its circuit breakers; and
per campaign: leads per state and per stage (active, completed, failed),
the completion rate, pending touches and an ETA. :func:`evaluate` turns a
report into :class:`Problem` s; no problem means healthy.

Layout:

* pure parts, tested without services: :func:`lead_counts`,
  :func:`estimate_eta`, :func:`summarize_dead_letters`,
  :class:`ProgressTracker`, :class:`BreakerWatch`, :func:`evaluate`,
  :func:`render_text`;
* readers: :func:`read_campaigns` (Postgres), :func:`sample_stages` (Kafka),
  :func:`read_dead_letter_rows` (Postgres table, else the topic),
  :func:`fetch_worker` (the worker's ``/health``);
* :func:`collect` puts them together; the CLI and the worker view both call it.

Clocks: lead timestamps (``leads.updated_at``, ``lead_transitions.occurred_at``,
``pending_touches.due_at``) are campaign time (``LEADFLOW_TIME_SCALE``, anchored
in ``clock_anchor``); everything this module reports is wall seconds.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import psycopg
from confluent_kafka import KafkaException

from providers.breaker import BreakerState, CircuitBreaker
from providers.ratelimit import Rate
from providers.settings import ProviderSettings
from sinks.campaigns import CampaignNotFoundError
from streams.campaign import Campaign
from streams.clock import CampaignClock
from streams.dead_letters import read_dead_letters
from streams.errors import ConfigError, KafkaUnavailableError, LeadflowError
from streams.lag import STAGE_INPUT_TOPICS, PartitionLag, stage_lag
from streams.settings import Settings, load_from_env, setting
from streams.state_machine import TERMINAL, State
from streams.topics import CATALOG

__all__ = [
    "FAILURE_STATES",
    "SEND_CHANNELS",
    "STAGES",
    "STAGE_BREAKERS",
    "STATE_HOME",
    "BreakerStatus",
    "BreakerWatch",
    "Bucket",
    "CampaignFacts",
    "CampaignHealth",
    "ChannelLimit",
    "DeadLetterCounts",
    "DeadLetterRow",
    "DeadLetterSummary",
    "Eta",
    "HealthReport",
    "HealthSettings",
    "LeadRow",
    "Problem",
    "ProgressTracker",
    "ProviderLimit",
    "ServiceStatus",
    "StageCounts",
    "StageQueue",
    "Step",
    "WorkerView",
    "build_campaign",
    "campaign_limits",
    "channel_limit",
    "collect",
    "estimate_eta",
    "evaluate",
    "fetch_worker",
    "lead_counts",
    "observe_lag",
    "provider_limits",
    "read_campaigns",
    "read_dead_letter_rows",
    "render_text",
    "sample_stages",
    "summarize_dead_letters",
]

#: The stages, in pipeline order (``inbound`` is the side entrance for webhooks).
STAGES: Final[tuple[str, ...]] = tuple(STAGE_INPUT_TOPICS)
#: Channels a campaign sends on.
SEND_CHANNELS: Final[tuple[str, ...]] = ("sms", "voice", "email")
#: The provider breakers each stage calls through.
STAGE_BREAKERS: Final[Mapping[str, tuple[str, ...]]] = {
    "enrich": ("enrichment",),
    "send": ("sms", "voice", "email", "llm"),
}
#: Terminal states that count as failures; every other terminal state is "completed".
FAILURE_STATES: Final[frozenset[State]] = frozenset(
    {State.INVALID, State.QUARANTINED, State.FAILED}
)
_DAY_S: Final = 86400.0


# --- settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthSettings:
    """Thresholds of the health checks (docs/HEALTH.md). Build with :meth:`from_env`."""

    stall_s: float = setting(
        60.0,
        "LEADFLOW_HEALTH_STALL_S",
        "Health: a stage with lag whose committed offsets have not advanced for longer "
        "than this (wall seconds) is stalled.",
    )
    sample_s: float = setting(
        3.0,
        "LEADFLOW_HEALTH_SAMPLE_S",
        "Health: seconds between the two lag samples `leadflow health` takes "
        "(--sample-s; 0 = one sample).",
    )
    breaker_open_s: float = setting(
        120.0,
        "LEADFLOW_HEALTH_BREAKER_OPEN_S",
        "Health: a circuit breaker that has not closed for longer than this is a problem.",
    )
    window_s: float = setting(
        300.0,
        "LEADFLOW_HEALTH_WINDOW_S",
        "Health: the recent window (wall seconds) for completion and dead-letter rates.",
    )
    max_dead_letter_rate: float = setting(
        1.0,
        "LEADFLOW_HEALTH_MAX_DEAD_LETTER_RATE",
        "Health: most dead letters per second (over the window) one stage may produce.",
    )
    stuck_s: float = setting(
        300.0,
        "LEADFLOW_HEALTH_STUCK_S",
        "Health: wall seconds a non-terminal lead may sit with nothing pending or in "
        "flight before it counts as stuck.",
    )
    max_stuck: int = setting(
        0, "LEADFLOW_HEALTH_MAX_STUCK", "Health: stuck leads a campaign may have and be healthy."
    )
    timeout_s: float = setting(
        5.0,
        "LEADFLOW_HEALTH_TIMEOUT_S",
        "Health: timeout of each Kafka, Postgres and worker request.",
    )
    worker_url: str = setting(
        "",
        "LEADFLOW_HEALTH_WORKER_URL",
        "Health: the worker web server `leadflow health` asks for breaker states; "
        "empty = http://127.0.0.1:$LEADFLOW_WEB_PORT.",
    )
    worker_sample_s: float = setting(
        10.0,
        "LEADFLOW_HEALTH_WORKER_SAMPLE_S",
        "Health: how often the worker samples stage lag for /health stall tracking; 0 = "
        "only when /health is asked.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HealthSettings:
        """Load from ``environ`` (default ``os.environ``); ConfigError names a bad variable."""
        hs = load_from_env(cls, environ)
        for name, value in (
            ("LEADFLOW_HEALTH_STALL_S", hs.stall_s),
            ("LEADFLOW_HEALTH_BREAKER_OPEN_S", hs.breaker_open_s),
            ("LEADFLOW_HEALTH_WINDOW_S", hs.window_s),
            ("LEADFLOW_HEALTH_STUCK_S", hs.stuck_s),
            ("LEADFLOW_HEALTH_TIMEOUT_S", hs.timeout_s),
        ):
            if not value > 0:
                raise ConfigError(f"{name}={value} must be > 0")
        for name, value in (
            ("LEADFLOW_HEALTH_SAMPLE_S", hs.sample_s),
            ("LEADFLOW_HEALTH_MAX_DEAD_LETTER_RATE", hs.max_dead_letter_rate),
            ("LEADFLOW_HEALTH_MAX_STUCK", hs.max_stuck),
            ("LEADFLOW_HEALTH_WORKER_SAMPLE_S", hs.worker_sample_s),
        ):
            if value < 0:
                raise ConfigError(f"{name}={value} must be >= 0")
        return hs

    def default_worker_url(self, settings: Settings) -> str:
        """``LEADFLOW_HEALTH_WORKER_URL``, else the local worker's web port."""
        return self.worker_url or f"http://127.0.0.1:{settings.web_port}"


# --- where leads are ---------------------------------------------------------------------


class Bucket(StrEnum):
    """How a lead counts at its stage."""

    ACTIVE = "active"  # waiting for, or being handled by, the stage
    COMPLETED = "completed"  # ended at the stage without a failure
    FAILED = "failed"  # ended at the stage in a failure state


class Step(StrEnum):
    """Where an ``in_sequence`` lead's current touch is."""

    UNQUEUED = "unqueued"  # no queued touch: nothing will move the lead (schedule)
    QUEUED = "queued"  # in pending_touches, not released yet (schedule)
    RELEASED = "released"  # on touch-due or at the provider, no outcome yet (send)
    SENT = "sent"  # outcome recorded, on sent for the next step (sequence)


#: state -> (stage, bucket). ``in_sequence`` is placed by its :class:`Step` instead.
STATE_HOME: Final[Mapping[State, tuple[str, Bucket]]] = {
    State.NEW: ("enrich", Bucket.ACTIVE),
    State.INVALID: ("enrich", Bucket.FAILED),
    State.DUPLICATE: ("enrich", Bucket.COMPLETED),
    State.ENRICHED: ("score", Bucket.ACTIVE),
    State.DISQUALIFIED: ("score", Bucket.COMPLETED),
    State.QUALIFIED: ("schedule", Bucket.ACTIVE),
    State.IN_SEQUENCE: ("schedule", Bucket.ACTIVE),
    State.RECONCILE: ("send", Bucket.ACTIVE),
    State.QUARANTINED: ("send", Bucket.FAILED),
    State.CANCELLED: ("send", Bucket.COMPLETED),
    State.COMPLETED: ("sequence", Bucket.COMPLETED),
    State.FAILED: ("sequence", Bucket.FAILED),
    State.REPLIED: ("inbound", Bucket.COMPLETED),
    State.OPTED_OUT: ("inbound", Bucket.COMPLETED),
}
_STEP_STAGE: Final[Mapping[Step, str]] = {
    Step.UNQUEUED: "schedule",
    Step.QUEUED: "schedule",
    Step.RELEASED: "send",
    Step.SENT: "sequence",
}
_PRE_SEQUENCE: Final = frozenset({State.NEW, State.ENRICHED, State.QUALIFIED})


@dataclass(frozen=True)
class LeadRow:
    """One group of a campaign's leads, as read from Postgres."""

    state: State
    #: For ``in_sequence`` leads: where the current touch is; None otherwise.
    step: Step | None
    #: The current touch of ``in_sequence`` leads (0 otherwise).
    touch: int
    #: No change for ``stuck_s``: lead, release and claim are all older than that.
    idle: bool
    count: int
    #: Queued touches already due (``in_sequence``, step queued).
    due: int = 0
    #: The latest due time (campaign time) of the group's queued touches.
    last_due: datetime | None = None


@dataclass(frozen=True)
class StageCounts:
    """Leads of a campaign at one stage."""

    active: int = 0
    completed: int = 0
    failed: int = 0

    def __add__(self, other: StageCounts) -> StageCounts:
        return StageCounts(
            self.active + other.active,
            self.completed + other.completed,
            self.failed + other.failed,
        )


def _stage_of(row: LeadRow) -> tuple[str, Bucket]:
    if row.state is State.IN_SEQUENCE and row.step is not None:
        return _STEP_STAGE[row.step], Bucket.ACTIVE
    return STATE_HOME[row.state]


def lead_counts(
    rows: Iterable[LeadRow], lag: Mapping[str, int | None]
) -> tuple[Counter[str], dict[str, StageCounts], int]:
    """Leads per state, per stage (:data:`STATE_HOME`), and how many are stuck.

    A lead is **stuck** when it is not terminal and not in ``reconcile``
    (which waits for an operator), has been idle for ``stuck_s``, has no
    touch waiting in the queue, and nothing is in flight for it: the stage
    that must move it has lag 0 (``lag`` per stage; None = unknown, then only
    leads with no queued touch at all count).
    """
    states: Counter[str] = Counter()
    stages = {stage: StageCounts() for stage in STAGES}
    stuck = 0
    for row in rows:
        states[row.state.value] += row.count
        stage, bucket = _stage_of(row)
        stages[stage] = stages[stage] + StageCounts(**{bucket.value: row.count})
        if (
            row.idle
            and row.state not in TERMINAL
            and row.state is not State.RECONCILE
            and row.step is not Step.QUEUED
            and (row.step is Step.UNQUEUED or lag.get(stage) == 0)
        ):
            stuck += row.count
    return states, stages, stuck


# --- ETA -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelLimit:
    """The slowest limit on one channel, in sends per wall second (None = unlimited)."""

    channel: str
    per_s: float | None
    #: What sets it: provider-rate, provider-daily-cap, campaign-rate, campaign-daily-cap, none.
    source: str


def _rate_per_s(rate: Rate | None) -> float | None:
    return None if rate is None else rate.count / rate.per


def channel_limit(
    channel: str,
    *,
    provider_rate: Rate | None,
    provider_daily_cap: int,
    campaign_rate: Rate | None,
    campaign_daily_cap: int | None,
    time_scale: float = 1.0,
) -> ChannelLimit:
    """The lowest of the provider's and the campaign's rate and daily cap, per wall second.

    Rates are wall time (provider throughput). The provider's daily cap is a
    wall day (the provider's calendar): cap / 86400. The campaign's daily cap
    is a campaign day, which lasts 86400 / ``time_scale`` wall seconds.
    """
    candidates = [
        ("provider-rate", _rate_per_s(provider_rate)),
        ("provider-daily-cap", provider_daily_cap / _DAY_S if provider_daily_cap else None),
        ("campaign-rate", _rate_per_s(campaign_rate)),
        (
            "campaign-daily-cap",
            campaign_daily_cap * time_scale / _DAY_S if campaign_daily_cap else None,
        ),
    ]
    known = [(per_s, source) for source, per_s in candidates if per_s is not None]
    if not known:
        return ChannelLimit(channel, None, "none")
    per_s, source = min(known)
    return ChannelLimit(channel, per_s, source)


@dataclass(frozen=True)
class ProviderLimit:
    """A provider account's limits on one channel, as the worker enforces them."""

    channel: str
    rate: Rate | None
    daily_cap: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the rate as ``COUNT/SECONDSs`` (None: unlimited) and the daily cap."""
        return {"rate": None if self.rate is None else str(self.rate), "daily_cap": self.daily_cap}

    @classmethod
    def from_dict(cls, channel: str, data: Mapping[str, Any]) -> ProviderLimit:
        """Inverse of :meth:`to_dict`."""
        rate = data.get("rate")
        return cls(channel, Rate.parse(str(rate)) if rate else None, int(data.get("daily_cap", 0)))


def provider_limits(providers: ProviderSettings) -> dict[str, ProviderLimit]:
    """Each send channel's provider limits from the provider settings."""
    out = {}
    for channel in SEND_CHANNELS:
        ch = providers.channel(channel)  # type: ignore[arg-type]
        out[channel] = ProviderLimit(channel, ch.rate, ch.daily_cap)
    return out


@dataclass(frozen=True)
class Eta:
    """Time to completion (docs/HEALTH.md, "ETA"); every figure is wall seconds."""

    #: The slowest of the known estimates; None when nothing is known.
    seconds: float | None
    #: Which estimate set ``seconds``: done, observed, rate_limit, delays or unknown.
    basis: str
    #: True when no lead finished in the window: ``seconds`` is then only a lower bound.
    lower_bound: bool
    remaining_leads: int
    observed_s: float | None
    rate_limit_s: float | None
    delays_s: float | None
    #: Touches still to send per channel (an upper bound: replies end sequences early).
    remaining_touches: Mapping[str, int]
    limits: Mapping[str, ChannelLimit]


def _future_touches(campaign: Campaign, after: int) -> list[int]:
    return [t.index for t in campaign.sequence if t.index > after]


def estimate_eta(
    campaign: Campaign,
    rows: Sequence[LeadRow],
    *,
    finished_per_s: float,
    limits: Mapping[str, ChannelLimit],
    campaign_now: datetime,
    time_scale: float,
) -> Eta:
    """The ETA: ``max(observed, rate_limit, delays)`` over the estimates that are known.

    - ``remaining`` = non-terminal leads except ``reconcile`` ones;
    - ``observed`` = remaining / finished_per_s (unknown when nothing finished lately);
    - ``rate_limit`` = max over channels of touches still to send / the channel's limit;
    - ``delays`` = the longest wait the sequence itself imposes: for a lead at
      touch k, the time until its queued touch is due plus the delays of
      touches k+1..n (the whole sequence for leads not in it yet), campaign
      time divided by ``time_scale``.
    """
    remaining = sum(
        r.count for r in rows if r.state not in TERMINAL and r.state is not State.RECONCILE
    )
    touches: Counter[str] = Counter({c: 0 for c in SEND_CHANNELS})
    longest = 0.0  # campaign seconds
    now_s = campaign_now.timestamp()
    for row in rows:
        if row.state in _PRE_SEQUENCE:
            todo = [t.index for t in campaign.sequence]
            wait = 0.0
        elif row.state is State.IN_SEQUENCE and 1 <= row.touch <= len(campaign.sequence):
            todo = _future_touches(campaign, row.touch)
            if row.step in (Step.QUEUED, Step.RELEASED):
                todo.insert(0, row.touch)
            wait = max(0.0, row.last_due.timestamp() - now_s) if row.last_due else 0.0
        else:
            continue
        for index in todo:
            touches[campaign.touch(index).channel] += row.count
        delays = sum(campaign.touch(i).delay.total_seconds() for i in todo if i != row.touch)
        longest = max(longest, wait + delays)
    if remaining == 0:
        return Eta(0.0, "done", False, 0, 0.0, 0.0, 0.0, dict(touches), dict(limits))
    observed = remaining / finished_per_s if finished_per_s > 0 else None
    per_channel = [
        touches[c] / limit.per_s
        for c, limit in limits.items()
        if limit.per_s is not None and limit.per_s > 0
    ]
    rate_limit = max(per_channel, default=0.0)
    delays_s = longest / time_scale
    estimates = {"observed": observed, "rate_limit": rate_limit, "delays": delays_s}
    known = {name: value for name, value in estimates.items() if value is not None}
    basis, seconds = max(known.items(), key=lambda kv: kv[1])
    return Eta(
        seconds=seconds,
        basis=basis,
        lower_bound=observed is None,
        remaining_leads=remaining,
        observed_s=observed,
        rate_limit_s=rate_limit,
        delays_s=delays_s,
        remaining_touches=dict(touches),
        limits=dict(limits),
    )


# --- dead letters -----------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterRow:
    """Dead letters of one (stage, campaign): all of them and those in the window."""

    stage: str
    campaign_id: str | None
    total: int
    recent: int


@dataclass(frozen=True)
class DeadLetterCounts:
    """All dead letters and those that failed within the window."""

    total: int = 0
    recent: int = 0


@dataclass(frozen=True)
class DeadLetterSummary:
    """Dead letters by stage and campaign, and where they were read."""

    #: postgres (the dead_letters table), topic (the dead-letter topic) or unavailable.
    source: str
    window_s: float
    by_stage: Mapping[str, DeadLetterCounts]
    by_campaign: Mapping[str, Mapping[str, DeadLetterCounts]]
    error: str | None = None

    @property
    def total(self) -> int:
        """Every dead letter read."""
        return sum(c.total for c in self.by_stage.values())

    @property
    def recent(self) -> int:
        """Dead letters in the window."""
        return sum(c.recent for c in self.by_stage.values())

    def rate_per_s(self, stage: str | None = None) -> float:
        """Dead letters per second over the window (all stages, or one)."""
        counts = self.by_stage.get(stage, DeadLetterCounts()) if stage else None
        recent = counts.recent if counts is not None else self.recent
        return recent / self.window_s

    def for_campaign(self, campaign_id: str) -> dict[str, DeadLetterCounts]:
        """The dead letters of one campaign, by stage."""
        return dict(self.by_campaign.get(campaign_id, {}))


def summarize_dead_letters(
    rows: Iterable[DeadLetterRow], *, source: str, window_s: float, error: str | None = None
) -> DeadLetterSummary:
    """Add rows up by stage and by campaign."""
    stages: dict[str, DeadLetterCounts] = {}
    campaigns: dict[str, dict[str, DeadLetterCounts]] = {}
    for row in rows:
        before = stages.get(row.stage, DeadLetterCounts())
        stages[row.stage] = DeadLetterCounts(before.total + row.total, before.recent + row.recent)
        if row.campaign_id:
            per = campaigns.setdefault(row.campaign_id, {})
            old = per.get(row.stage, DeadLetterCounts())
            per[row.stage] = DeadLetterCounts(old.total + row.total, old.recent + row.recent)
    return DeadLetterSummary(source, window_s, stages, campaigns, error)


# --- stage progress and breakers (state kept across samples) ------------------------------


@dataclass
class _Track:
    position: int
    quiet_since: float
    at: float


class ProgressTracker:
    """Follows each stage's committed position across lag samples (thread-safe).

    ``observe`` returns the throughput since the previous sample and for how
    long the stage has had lag without its committed position moving: the
    clock starts at the last sample where the position moved or the lag was 0.
    With sparse samples that start can be up to one sample interval early.
    """

    def __init__(self) -> None:
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()

    def observe(
        self, stage: str, position: int, lag: int, now: float
    ) -> tuple[float | None, float]:
        """Record a sample; returns (records/s since the last sample or None, stalled seconds)."""
        with self._lock:
            prev = self._tracks.get(stage)
            if prev is None or position < prev.position:  # first sample, or offsets reset
                self._tracks[stage] = _Track(position, now, now)
                return None, 0.0
            elapsed = now - prev.at
            rate = (position - prev.position) / elapsed if elapsed > 0 else None
            quiet = now if position != prev.position or lag == 0 else prev.quiet_since
            self._tracks[stage] = _Track(position, quiet, now)
            return rate, (now - quiet if lag > 0 else 0.0)


@dataclass(frozen=True)
class BreakerStatus:
    """A circuit breaker as /health reports it (state ``unknown`` when not reachable)."""

    channel: str
    state: str
    provider: str | None = None
    #: Seconds since the breaker last left ``closed`` (None while closed or unknown).
    not_closed_for_s: float | None = None
    error_rate: float | None = None
    retry_after_s: float | None = None
    opened_count: int | None = None

    @classmethod
    def unknown(cls, channel: str) -> BreakerStatus:
        """A breaker the worker could not be asked about."""
        return cls(channel, "unknown")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BreakerStatus:
        """Inverse of ``asdict`` (the worker's JSON)."""

        def num(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        count = data.get("opened_count")
        return cls(
            channel=str(data["channel"]),
            state=str(data["state"]),
            provider=None if data.get("provider") is None else str(data["provider"]),
            not_closed_for_s=num("not_closed_for_s"),
            error_rate=num("error_rate"),
            retry_after_s=num("retry_after_s"),
            opened_count=None if count is None else int(count),
        )


class BreakerWatch:
    """Remembers since when each breaker has been away from ``closed`` (a breaker listener).

    A breaker first seen open counts from that moment (its earlier history is
    not known), so ``not_closed_for_s`` is a lower bound until it closes once.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._since: dict[str, float] = {}
        self._watched: set[int] = set()

    def watch(self, breaker: CircuitBreaker) -> None:
        """Start listening to ``breaker`` (once per breaker)."""
        if id(breaker) in self._watched:
            return
        self._watched.add(id(breaker))
        breaker.add_listener(self._on_change)
        if breaker.state is not BreakerState.CLOSED:
            self._since.setdefault(breaker.name, self._clock())

    def _on_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.CLOSED:
            self._since.pop(name, None)
        elif old is BreakerState.CLOSED:
            self._since[name] = self._clock()

    def status(self, channel: str, breaker: CircuitBreaker) -> BreakerStatus:
        """The breaker of ``channel`` now."""
        self.watch(breaker)
        state = breaker.state
        since = self._since.get(breaker.name)
        open_for = None
        if state is not BreakerState.CLOSED:
            open_for = self._clock() - since if since is not None else 0.0
        return BreakerStatus(
            channel=channel,
            state=state.value,
            provider=breaker.name,
            not_closed_for_s=open_for,
            error_rate=breaker.error_rate,
            retry_after_s=breaker.retry_after(),
            opened_count=breaker.opened_count,
        )


# --- the report ------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceStatus:
    """Whether a service answered."""

    ok: bool
    error: str | None = None
    #: The worker's URL (for the worker only).
    url: str | None = None


@dataclass(frozen=True)
class StageQueue:
    """One stage's input queue (the worker group's lag on its input topic)."""

    stage: str
    topic: str
    #: Records not committed past; None when Kafka could not be read.
    lag: int | None
    partitions: tuple[PartitionLag, ...] = ()
    #: Records per second committed between the last two samples.
    throughput_per_s: float | None = None
    #: Seconds the stage has had lag without committing progress.
    stalled_for_s: float = 0.0
    #: lag / throughput (0 with no lag; None with no measured throughput).
    drain_eta_s: float | None = None


@dataclass(frozen=True)
class CampaignHealth:
    """One campaign's figures."""

    campaign_id: str
    name: str
    status: str
    total: int
    #: Non-terminal leads (``reconcile`` included).
    active: int
    #: Terminal leads outside :data:`FAILURE_STATES`.
    completed: int
    #: Leads in :data:`FAILURE_STATES`.
    failed: int
    reconcile: int
    stuck: int
    states: Mapping[str, int]
    stages: Mapping[str, StageCounts]
    #: Leads that reached a terminal state per wall second, over the window.
    finished_per_s: float
    finished_in_window: int
    completed_in_window: int
    #: The window actually used (shorter than the setting for a young campaign).
    window_s: float
    pending_touches: Mapping[str, Mapping[str, int]]
    dead_letters: Mapping[str, DeadLetterCounts]
    eta: Eta

    @property
    def finished(self) -> int:
        """Leads in a terminal state."""
        return self.completed + self.failed

    @property
    def fraction_finished(self) -> float:
        """finished / total (1.0 for an empty campaign)."""
        return self.finished / self.total if self.total else 1.0

    @property
    def fraction_completed(self) -> float:
        """completed / total."""
        return self.completed / self.total if self.total else 1.0


@dataclass(frozen=True)
class Problem:
    """One reason the system is unhealthy."""

    check: str
    message: str
    stage: str | None = None
    channel: str | None = None
    campaign_id: str | None = None


@dataclass(frozen=True)
class HealthReport:
    """Everything ``leadflow health`` and ``/health`` report."""

    source: str  # cli | worker
    checked_at: datetime
    kafka: ServiceStatus
    postgres: ServiceStatus
    #: The worker asked for breakers (None: not asked, e.g. the worker's own view).
    worker: ServiceStatus | None
    stages: Mapping[str, StageQueue]
    breakers: Mapping[str, BreakerStatus]
    dead_letters: DeadLetterSummary
    campaigns: tuple[CampaignHealth, ...]
    settings: HealthSettings
    #: The provider limits the ETA used, and whose they are (worker or local).
    provider_limits: Mapping[str, ProviderLimit] = field(default_factory=dict)
    provider_limits_source: str = "local"
    problems: tuple[Problem, ...] = ()

    @property
    def healthy(self) -> bool:
        """True when no check found a problem."""
        return not self.problems

    @property
    def http_status(self) -> int:
        """200 when healthy, else 503."""
        return 200 if self.healthy else 503

    @property
    def exit_code(self) -> int:
        """0 when healthy, else 1."""
        return 0 if self.healthy else 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (docs/HEALTH.md lists every field)."""
        stage_leads = _stage_totals(self.campaigns)
        return {
            "healthy": self.healthy,
            "status": "healthy" if self.healthy else "unhealthy",
            "source": self.source,
            "checked_at": self.checked_at.isoformat(),
            "problems": [_drop_none(asdict(p)) for p in self.problems],
            "services": {
                "kafka": _drop_none(asdict(self.kafka)),
                "postgres": _drop_none(asdict(self.postgres)),
                "worker": None if self.worker is None else _drop_none(asdict(self.worker)),
            },
            "stages": {
                name: {
                    "topic": q.topic,
                    "lag": q.lag,
                    "throughput_per_s": _round(q.throughput_per_s),
                    "stalled_for_s": _round(q.stalled_for_s),
                    "drain_eta_s": _round(q.drain_eta_s),
                    "partitions": [
                        {
                            "partition": p.partition,
                            "committed": p.committed,
                            "end": p.end,
                            "lag": p.lag,
                        }
                        for p in q.partitions
                    ],
                    "leads": asdict(stage_leads[name]),
                    "dead_letters": asdict(
                        self.dead_letters.by_stage.get(name, DeadLetterCounts())
                    ),
                    "breakers": {
                        c: self.breakers[c].state
                        for c in STAGE_BREAKERS.get(name, ())
                        if c in self.breakers
                    },
                }
                for name, q in self.stages.items()
            },
            "breakers": {c: _rounded(asdict(b)) for c, b in self.breakers.items()},
            "dead_letters": {
                "source": self.dead_letters.source,
                "error": self.dead_letters.error,
                "window_s": self.dead_letters.window_s,
                "total": self.dead_letters.total,
                "recent": self.dead_letters.recent,
                "rate_per_s": _round(self.dead_letters.rate_per_s()),
                "by_stage": {s: asdict(c) for s, c in self.dead_letters.by_stage.items()},
            },
            "campaigns": [_campaign_dict(c) for c in self.campaigns],
            "provider_limits": {
                "source": self.provider_limits_source,
                "limits": {c: limit.to_dict() for c, limit in self.provider_limits.items()},
            },
            "thresholds": asdict(self.settings),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _rounded(data: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in data.items()}


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _stage_totals(campaigns: Iterable[CampaignHealth]) -> dict[str, StageCounts]:
    totals = {stage: StageCounts() for stage in STAGES}
    for c in campaigns:
        for stage, counts in c.stages.items():
            totals[stage] = totals[stage] + counts
    return totals


def _campaign_dict(c: CampaignHealth) -> dict[str, Any]:
    eta = c.eta
    return {
        "campaign_id": c.campaign_id,
        "name": c.name,
        "status": c.status,
        "total": c.total,
        "active": c.active,
        "completed": c.completed,
        "failed": c.failed,
        "finished": c.finished,
        "reconcile": c.reconcile,
        "stuck": c.stuck,
        "states": dict(sorted(c.states.items())),
        "stages": {s: asdict(counts) for s, counts in c.stages.items()},
        "completion": {
            "window_s": _round(c.window_s),
            "finished_in_window": c.finished_in_window,
            "completed_in_window": c.completed_in_window,
            "finished_per_s": _round(c.finished_per_s),
            "fraction_finished": _round(c.fraction_finished),
            "fraction_completed": _round(c.fraction_completed),
        },
        "pending_touches": {ch: dict(v) for ch, v in c.pending_touches.items()},
        "dead_letters": {s: asdict(d) for s, d in c.dead_letters.items()},
        "eta": {
            "seconds": _round(eta.seconds),
            "basis": eta.basis,
            "lower_bound": eta.lower_bound,
            "remaining_leads": eta.remaining_leads,
            "observed_s": _round(eta.observed_s),
            "rate_limit_s": _round(eta.rate_limit_s),
            "delays_s": _round(eta.delays_s),
            "remaining_touches": dict(eta.remaining_touches),
            "limits": {
                ch: {"per_s": _round(limit.per_s), "source": limit.source}
                for ch, limit in eta.limits.items()
            },
        },
    }


# --- the checks ------------------------------------------------------------------------


def evaluate(report: HealthReport) -> tuple[Problem, ...]:
    """Every problem in ``report`` (docs/HEALTH.md, "Unhealthy"), by its own thresholds."""
    hs = report.settings
    out: list[Problem] = []
    if not report.kafka.ok:
        out.append(Problem("kafka_unreachable", f"Kafka: {report.kafka.error}"))
    if not report.postgres.ok:
        out.append(Problem("postgres_unreachable", f"Postgres: {report.postgres.error}"))
    if report.worker is not None and not report.worker.ok:
        out.append(
            Problem("worker_unreachable", f"worker {report.worker.url}: {report.worker.error}")
        )
    for name, q in report.stages.items():
        if q.lag and q.stalled_for_s > hs.stall_s:
            out.append(
                Problem(
                    "stage_stalled",
                    f"stage {name}: lag {q.lag} and no committed progress for "
                    f"{q.stalled_for_s:.0f} s (> {hs.stall_s:g} s)",
                    stage=name,
                )
            )
    for channel, b in report.breakers.items():
        if b.not_closed_for_s is not None and b.not_closed_for_s > hs.breaker_open_s:
            out.append(
                Problem(
                    "breaker_open",
                    f"breaker {channel} is {b.state} and has not closed for "
                    f"{b.not_closed_for_s:.0f} s (> {hs.breaker_open_s:g} s)",
                    channel=channel,
                )
            )
    for stage in report.dead_letters.by_stage:
        rate = report.dead_letters.rate_per_s(stage)
        if rate > hs.max_dead_letter_rate:
            out.append(
                Problem(
                    "dead_letter_rate",
                    f"stage {stage}: {rate:.2f} dead letters/s over the last "
                    f"{hs.window_s:g} s (> {hs.max_dead_letter_rate:g}/s)",
                    stage=stage,
                )
            )
    for c in report.campaigns:
        if c.stuck > hs.max_stuck:
            out.append(
                Problem(
                    "stuck_leads",
                    f"campaign {c.campaign_id}: {c.stuck} leads idle for > {hs.stuck_s:g} s "
                    "with nothing queued or in flight",
                    campaign_id=c.campaign_id,
                )
            )
    return tuple(out)


# --- readers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignFacts:
    """What Postgres says about one campaign (input of :func:`build_campaign`)."""

    campaign: Campaign
    status: str
    rows: tuple[LeadRow, ...]
    finished_in_window: int
    completed_in_window: int
    #: Campaign time of the campaign's first lead transition.
    first_transition: datetime | None


_LEADS_SQL = """
SELECT l.campaign_id, l.state,
       CASE WHEN l.state <> 'in_sequence' THEN NULL
            WHEN p.lead_id IS NULL THEN 'unqueued'
            WHEN p.emitted_at IS NULL THEN 'queued'
            WHEN s.status IS NULL OR s.status IN ('claimed', 'ambiguous') THEN 'released'
            ELSE 'sent' END AS step,
       CASE WHEN l.state = 'in_sequence' THEN l.touch ELSE 0 END AS touch,
       (l.updated_at < %(campaign_cutoff)s
        AND (p.emitted_at IS NULL OR p.emitted_at < %(wall_cutoff)s)
        AND (s.claimed_at IS NULL OR s.claimed_at < %(wall_cutoff)s)) AS idle,
       count(*),
       count(*) FILTER (WHERE p.emitted_at IS NULL AND p.due_at <= %(campaign_now)s),
       max(p.due_at) FILTER (WHERE p.emitted_at IS NULL)
FROM leads l
LEFT JOIN pending_touches p
       ON l.state = 'in_sequence' AND p.campaign_id = l.campaign_id
      AND p.lead_id = l.lead_id AND p.touch = l.touch
LEFT JOIN send_ledger s
       ON l.state = 'in_sequence' AND s.campaign_id = l.campaign_id
      AND s.lead_id = l.lead_id AND s.touch = l.touch
WHERE l.campaign_id = ANY(%(ids)s)
GROUP BY 1, 2, 3, 4, 5
"""

_WINDOW_SQL = """
SELECT campaign_id,
       count(*) FILTER (WHERE to_state = ANY(%(terminal)s) AND occurred_at > %(since)s),
       count(*) FILTER (WHERE to_state = ANY(%(success)s) AND occurred_at > %(since)s),
       min(occurred_at)
FROM lead_transitions
WHERE campaign_id = ANY(%(ids)s)
GROUP BY 1
"""


def _connect(dsn: str, timeout_s: float) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=max(1, math.ceil(timeout_s)))


def _clock(conn: psycopg.Connection[tuple[Any, ...]], settings: Settings) -> CampaignClock:
    row = conn.execute(
        "SELECT extract(epoch FROM wall_anchor), extract(epoch FROM campaign_anchor), scale "
        "FROM clock_anchor WHERE id = 1"
    ).fetchone()
    if row is None:  # no worker has run yet: campaign time is wall time at the configured scale
        now = time.time()
        return CampaignClock(settings.time_scale, now, now)
    return CampaignClock(float(row[2]), float(row[0]), float(row[1]))


def read_campaigns(
    conn: psycopg.Connection[tuple[Any, ...]],
    settings: Settings,
    hs: HealthSettings,
    campaign_id: str | None = None,
) -> tuple[CampaignClock, list[CampaignFacts]]:
    """The campaign clock and the facts of ``campaign_id`` (or of every active campaign).

    Raises :class:`~sinks.campaigns.CampaignNotFoundError` for an unknown id.
    """
    clock = _clock(conn, settings)
    if campaign_id is not None:
        found = conn.execute(
            "SELECT campaign_id, status, config FROM campaigns WHERE campaign_id = %s",
            (campaign_id,),
        ).fetchall()
        if not found:
            raise CampaignNotFoundError(f"no campaign with id {campaign_id!r}")
    else:
        found = conn.execute(
            "SELECT campaign_id, status, config FROM campaigns WHERE status = 'active' "
            "ORDER BY created_at, campaign_id"
        ).fetchall()
    if not found:
        return clock, []
    ids = [str(r[0]) for r in found]
    now = clock.now()
    wall_now = datetime.fromtimestamp(clock.wall(), UTC)
    rows: dict[str, list[LeadRow]] = {i: [] for i in ids}
    for cid, state, step, touch, idle, n, due, last_due in conn.execute(
        _LEADS_SQL,
        {
            "ids": ids,
            "campaign_now": now,
            "campaign_cutoff": now - clock.campaign_span(hs.stuck_s),
            "wall_cutoff": wall_now - timedelta(seconds=hs.stuck_s),
        },
    ):
        rows[str(cid)].append(
            LeadRow(
                state=State(state),
                step=None if step is None else Step(step),
                touch=int(touch),
                idle=bool(idle),
                count=int(n),
                due=int(due),
                last_due=last_due,
            )
        )
    window: dict[str, tuple[int, int, datetime | None]] = {}
    for cid, finished, completed, first in conn.execute(
        _WINDOW_SQL,
        {
            "ids": ids,
            "terminal": [s.value for s in TERMINAL],
            "success": [s.value for s in TERMINAL - FAILURE_STATES],
            "since": now - clock.campaign_span(hs.window_s),
        },
    ):
        window[str(cid)] = (int(finished), int(completed), first)
    facts = []
    for cid, status, config in found:
        finished, completed, first = window.get(str(cid), (0, 0, None))
        facts.append(
            CampaignFacts(
                campaign=Campaign.from_dict(config, source=f"stored campaign {cid}"),
                status=str(status),
                rows=tuple(rows[str(cid)]),
                finished_in_window=finished,
                completed_in_window=completed,
                first_transition=first,
            )
        )
    return clock, facts


def build_campaign(
    facts: CampaignFacts,
    *,
    clock: CampaignClock,
    lag: Mapping[str, int | None],
    limits: Mapping[str, ChannelLimit],
    dead_letters: Mapping[str, DeadLetterCounts],
    window_s: float,
) -> CampaignHealth:
    """A campaign's figures from its facts (pure apart from the clock)."""
    states, stages, stuck = lead_counts(facts.rows, lag)
    total = sum(states.values())
    failed = sum(n for s, n in states.items() if State(s) in FAILURE_STATES)
    terminal = sum(n for s, n in states.items() if State(s) in TERMINAL)
    now = clock.now()
    window = window_s
    if facts.first_transition is not None:
        age = (now - facts.first_transition).total_seconds() / clock.scale
        window = max(1.0, min(window_s, age))
    pending: dict[str, dict[str, int]] = {
        c: {"queued": 0, "due": 0, "in_flight": 0} for c in SEND_CHANNELS
    }
    for row in facts.rows:
        if row.state is not State.IN_SEQUENCE or row.step not in (Step.QUEUED, Step.RELEASED):
            continue
        if not 1 <= row.touch <= len(facts.campaign.sequence):
            continue
        bucket = pending.setdefault(
            facts.campaign.touch(row.touch).channel, {"queued": 0, "due": 0, "in_flight": 0}
        )
        if row.step is Step.QUEUED:
            bucket["queued"] += row.count
            bucket["due"] += row.due
        else:
            bucket["in_flight"] += row.count
    finished_per_s = facts.finished_in_window / window
    return CampaignHealth(
        campaign_id=facts.campaign.id,
        name=facts.campaign.name,
        status=facts.status,
        total=total,
        active=total - terminal,
        completed=terminal - failed,
        failed=failed,
        reconcile=states.get(State.RECONCILE.value, 0),
        stuck=stuck,
        states=dict(states),
        stages=stages,
        finished_per_s=finished_per_s,
        finished_in_window=facts.finished_in_window,
        completed_in_window=facts.completed_in_window,
        window_s=window,
        pending_touches=pending,
        dead_letters=dead_letters,
        eta=estimate_eta(
            facts.campaign,
            facts.rows,
            finished_per_s=finished_per_s,
            limits=limits,
            campaign_now=now,
            time_scale=clock.scale,
        ),
    )


def campaign_limits(
    campaign: Campaign, providers: Mapping[str, ProviderLimit], time_scale: float
) -> dict[str, ChannelLimit]:
    """Per send channel, the slowest of the provider account's and the campaign's limits."""
    out = {}
    for channel in SEND_CHANNELS:
        account = providers.get(channel, ProviderLimit(channel, None))
        mine = campaign.channel_settings(channel)  # type: ignore[arg-type]
        out[channel] = channel_limit(
            channel,
            provider_rate=account.rate,
            provider_daily_cap=account.daily_cap,
            campaign_rate=mine.rate_limit(),
            campaign_daily_cap=mine.daily_cap,
            time_scale=time_scale,
        )
    return out


def _topic_names(settings: Settings) -> list[str]:
    return [spec.full_name(settings) for spec in CATALOG]


def read_dead_letter_rows(
    conn: psycopg.Connection[tuple[Any, ...]] | None,
    settings: Settings,
    hs: HealthSettings,
    *,
    read_topic: bool = True,
    now: datetime | None = None,
) -> tuple[str, list[DeadLetterRow]]:
    """Dead letters from the ``dead_letters`` table if it has any of our topics', else the topic.

    Returns (source, rows); source is ``postgres``, ``topic``, or
    ``unavailable`` when the table is empty (or ``conn`` is None) and
    ``read_topic`` is false. ``failed_at`` is wall time in both. Reading the
    topic means reading it to its end, so the table (filled by the sink) is
    preferred whenever it has rows. Raises KafkaUnavailableError.
    """
    wall_now = now or datetime.now(UTC)
    since = wall_now - timedelta(seconds=hs.window_s)
    if conn is not None:
        found = conn.execute(
            "SELECT stage, campaign_id, count(*), count(*) FILTER (WHERE failed_at > %s) "
            "FROM dead_letters WHERE original_topic = ANY(%s) GROUP BY 1, 2",
            (since, _topic_names(settings)),
        ).fetchall()
        if found:
            return "postgres", [
                DeadLetterRow(str(s), None if c is None else str(c), int(n), int(r))
                for s, c, n, r in found
            ]
    if not read_topic:
        return "unavailable", []
    try:
        records = read_dead_letters(settings, timeout_s=hs.timeout_s)
    except (KafkaException, TimeoutError) as exc:
        raise KafkaUnavailableError(
            f"cannot read the dead-letter topic within {hs.timeout_s:g} s: {exc}"
        ) from exc
    counts: Counter[tuple[str, str | None]] = Counter()
    recent: Counter[tuple[str, str | None]] = Counter()
    for record in records:
        key = (str(record["stage"]), record.get("campaign_id"))
        counts[key] += 1
        failed_at = record["failed_at"]
        if not isinstance(failed_at, datetime):
            failed_at = datetime.fromtimestamp(int(failed_at) / 1000, UTC)
        if failed_at > since:
            recent[key] += 1
    return "topic", [DeadLetterRow(s, c, n, recent[(s, c)]) for (s, c), n in counts.items()]


def sample_stages(
    settings: Settings, timeout_s: float, *, attempts: int = 3, pause_s: float = 0.5
) -> dict[str, list[PartitionLag]]:
    """One lag sample of every stage; raises KafkaUnavailableError.

    A broker error or a timeout while reading offsets (a partition whose
    leader is being elected, a group coordinator still loading) is retried
    ``attempts`` times before it counts.
    """
    for attempt in range(1, attempts + 1):
        try:
            return stage_lag(settings, timeout_s=timeout_s)
        except (KafkaException, TimeoutError) as exc:
            if attempt == attempts:
                raise KafkaUnavailableError(f"cannot read consumer lag: {exc}") from exc
            time.sleep(pause_s)
    raise AssertionError("unreachable")  # pragma: no cover


def _position(parts: Sequence[PartitionLag]) -> int:
    return sum(p.end - p.lag for p in parts)


@dataclass(frozen=True)
class WorkerView:
    """What the CLI takes from the worker's ``/health``."""

    status: ServiceStatus
    breakers: Mapping[str, BreakerStatus] = field(default_factory=dict)
    #: Per stage, how long the worker has seen the stage stalled.
    stalled_for_s: Mapping[str, float] = field(default_factory=dict)
    #: The provider limits the worker enforces (its environment, not ours).
    provider_limits: Mapping[str, ProviderLimit] = field(default_factory=dict)


def fetch_worker(url: str, timeout_s: float, campaign_id: str | None = None) -> WorkerView:
    """GET ``url``/health; an unreachable worker or a bad answer is reported, never raised."""
    query = f"?{urllib.parse.urlencode({'campaign': campaign_id})}" if campaign_id else ""
    target = f"{url.rstrip('/')}/health{query}"
    if not target.startswith(("http://", "https://")):
        return WorkerView(ServiceStatus(False, "the worker URL must be http(s)", url))
    try:
        with urllib.request.urlopen(target, timeout=timeout_s) as resp:  # noqa: S310 - checked
            body = resp.read()
    except urllib.error.HTTPError as exc:  # 503 still carries the report
        body = exc.read()
    except (OSError, ValueError) as exc:
        return WorkerView(ServiceStatus(False, f"{type(exc).__name__}: {exc}", url))
    try:
        doc = json.loads(body)
        breakers = {str(c): BreakerStatus.from_dict(b) for c, b in doc["breakers"].items()}
        stalled = {str(s): float(v["stalled_for_s"] or 0.0) for s, v in doc["stages"].items()}
        limits = {
            str(c): ProviderLimit.from_dict(str(c), v)
            for c, v in (doc.get("provider_limits") or {}).get("limits", {}).items()
        }
    except (LeadflowError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return WorkerView(ServiceStatus(False, f"not a leadflow /health answer ({exc})", url))
    return WorkerView(ServiceStatus(True, None, url), breakers, stalled, limits)


# --- putting it together --------------------------------------------------------------------


def collect(
    settings: Settings,
    hs: HealthSettings,
    *,
    providers: ProviderSettings,
    campaign_id: str | None = None,
    source: str = "cli",
    tracker: ProgressTracker | None = None,
    sample_s: float = 0.0,
    breakers: Mapping[str, BreakerStatus] | None = None,
    worker: Callable[[], WorkerView] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> HealthReport:
    """Read Kafka and Postgres (and ask the worker) and build the report with its problems.

    ``sample_s`` > 0 takes a second lag sample that long after the first, so
    throughput and stalls are measured within this call; ``tracker`` keeps
    samples across calls (the worker's view). ``breakers`` are known
    in-process (the worker); otherwise ``worker()`` is asked for them, and
    its stall durations extend this call's when this call also saw no
    progress. Raises only for an unknown ``campaign_id`` (exit status 2).
    """
    tracker = tracker if tracker is not None else ProgressTracker()
    lag, kafka_error = _sample(settings, hs)
    progress = observe_lag(tracker, lag)
    first = time.monotonic()
    view = worker() if worker is not None else None  # asked while the interval runs
    if sample_s > 0 and lag is not None:
        sleep(max(0.0, sample_s - (time.monotonic() - first)))
        lag, kafka_error = _sample(settings, hs)
        progress = observe_lag(tracker, lag)
    stages = _stage_queues(settings, lag, progress, view)
    stage_lag_now = {name: q.lag for name, q in stages.items()}

    facts: list[CampaignFacts] = []
    clock = CampaignClock.realtime()
    pg_error: str | None = None
    dead_source, dead_error = "unavailable", None
    dead_rows: list[DeadLetterRow] = []
    try:
        with _connect(settings.dsn, hs.timeout_s) as conn:
            clock, facts = read_campaigns(conn, settings, hs, campaign_id)
            try:
                dead_source, dead_rows = read_dead_letter_rows(
                    conn, settings, hs, read_topic=kafka_error is None
                )
            except LeadflowError as exc:
                dead_error = str(exc)
    except psycopg.Error as exc:
        pg_error = f"{type(exc).__name__}: {str(exc).strip() or 'connection failed'}"
        try:
            dead_source, dead_rows = read_dead_letter_rows(
                None, settings, hs, read_topic=kafka_error is None
            )
        except LeadflowError as exc2:
            dead_error = str(exc2)
    dead = summarize_dead_letters(
        dead_rows, source=dead_source, window_s=hs.window_s, error=dead_error
    )
    limits, limits_source = provider_limits(providers), "local"
    if view is not None and view.provider_limits:
        limits, limits_source = dict(view.provider_limits), "worker"
    campaigns = tuple(
        build_campaign(
            f,
            clock=clock,
            lag=stage_lag_now,
            limits=campaign_limits(f.campaign, limits, clock.scale),
            dead_letters=dead.for_campaign(f.campaign.id),
            window_s=hs.window_s,
        )
        for f in facts
    )
    if breakers is None:
        known = view.breakers if view is not None else {}
        breakers = {c: known.get(c, BreakerStatus.unknown(c)) for c in providers.enabled_channels()}
    report = HealthReport(
        source=source,
        checked_at=datetime.now(UTC),
        kafka=ServiceStatus(kafka_error is None, kafka_error),
        postgres=ServiceStatus(pg_error is None, pg_error),
        worker=None if view is None else view.status,
        stages=stages,
        breakers=dict(breakers),
        dead_letters=dead,
        campaigns=campaigns,
        settings=hs,
        provider_limits=limits,
        provider_limits_source=limits_source,
    )
    return replace(report, problems=evaluate(report))


def _sample(
    settings: Settings, hs: HealthSettings
) -> tuple[dict[str, list[PartitionLag]] | None, str | None]:
    try:
        return sample_stages(settings, hs.timeout_s), None
    except LeadflowError as exc:
        return None, str(exc)


def observe_lag(
    tracker: ProgressTracker, lag: Mapping[str, list[PartitionLag]] | None
) -> dict[str, tuple[float | None, float]]:
    """Feed one lag sample to ``tracker``: per stage, (records/s, stalled seconds)."""
    if lag is None:
        return {}
    now = time.monotonic()
    return {
        stage: tracker.observe(stage, _position(parts), sum(p.lag for p in parts), now)
        for stage, parts in lag.items()
    }


def _stage_queues(
    settings: Settings,
    lag: Mapping[str, list[PartitionLag]] | None,
    progress: Mapping[str, tuple[float | None, float]],
    view: WorkerView | None,
) -> dict[str, StageQueue]:
    out = {}
    for stage, base in STAGE_INPUT_TOPICS.items():
        topic = settings.topic_name(base)
        if lag is None:
            out[stage] = StageQueue(stage, topic, None)
            continue
        parts = tuple(lag.get(stage, []))
        depth = sum(p.lag for p in parts)
        rate, stalled = progress.get(stage, (None, 0.0))
        if stalled > 0 and view is not None:
            stalled = max(stalled, view.stalled_for_s.get(stage, 0.0))
        drain = 0.0 if depth == 0 else (depth / rate if rate else None)
        out[stage] = StageQueue(stage, topic, depth, parts, rate, stalled, drain)
    return out


# --- text ------------------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _service(name: str, status: ServiceStatus | None) -> str:
    if status is None:
        return f"{name} not asked"
    where = f" {status.url}" if status.url else ""
    return f"{name}{where} {'ok' if status.ok else 'UNREACHABLE'}"


def render_text(report: HealthReport) -> list[str]:
    """The report for a terminal."""
    n = len(report.problems)
    verdict = "healthy" if report.healthy else f"UNHEALTHY ({n} problem{'s' if n > 1 else ''})"
    out = [f"leadflow health: {verdict}"]
    out += [f"  problem: {p.message}" for p in report.problems]
    services = [
        _service("kafka", report.kafka),
        _service("postgres", report.postgres),
        _service("worker", report.worker),
    ]
    out.append(", ".join(services))
    out.append(
        f"{'stage':<9} {'lag':>7} {'rec/s':>8} {'drain':>7} {'stalled':>8} {'dead':>5}  breakers"
    )
    for name, q in report.stages.items():
        dead = report.dead_letters.by_stage.get(name, DeadLetterCounts()).total
        breakers = " ".join(
            f"{c}={report.breakers[c].state}"
            for c in STAGE_BREAKERS.get(name, ())
            if c in report.breakers
        )
        rate = "?" if q.throughput_per_s is None else f"{q.throughput_per_s:.1f}"
        out.append(
            f"{name:<9} {'?' if q.lag is None else q.lag:>7} {rate:>8} "
            f"{_duration(q.drain_eta_s):>7} {_duration(q.stalled_for_s):>8} {dead:>5}  {breakers}"
        )
    out.append(
        f"dead letters ({report.dead_letters.source}): {report.dead_letters.total}, "
        f"{report.dead_letters.recent} in the last {_duration(report.dead_letters.window_s)}"
    )
    if not report.campaigns:
        out.append("no active campaigns")
    for c in report.campaigns:
        eta = c.eta
        bound = "at least " if eta.lower_bound else ""
        out.append(
            f"campaign {c.campaign_id} ({c.status}): {c.total} leads; active {c.active}, "
            f"completed {c.completed}, failed {c.failed}, reconcile {c.reconcile}, "
            f"stuck {c.stuck}; {c.fraction_finished:.1%} finished, "
            f"{c.finished_per_s:.2f} leads/s; ETA {bound}{_duration(eta.seconds)} ({eta.basis})"
        )
        out.append(f"  {'stage':<9} {'active':>7} {'completed':>9} {'failed':>7}")
        for stage, counts in c.stages.items():
            out.append(f"  {stage:<9} {counts.active:>7} {counts.completed:>9} {counts.failed:>7}")
        queued = ", ".join(
            f"{ch} {v['queued']} queued ({v['due']} due), {v['in_flight']} in flight"
            for ch, v in c.pending_touches.items()
            if any(v.values())
        )
        if queued:
            out.append(f"  touches: {queued}")
    return out
