"""Stage 3, schedule: ``scored`` and ``sent`` -> the touch queue -> ``touch-due``.

- A qualified lead enters its sequence: it moves to ``in_sequence`` (touch 1)
  and touch 1 is queued in Postgres (``pending_touches``), due after the
  touch's delay and moved to the next opening of the lead's send window.
- When a touch's outcome arrives on ``sent``, the next touch is queued, due
  its delay after the send (again window-adjusted), or the lead ends:
  ``completed`` if any touch was accepted, else ``failed``.
- A release loop moves due touches of this worker's partitions to
  ``touch-due``, best priority first, at most what each channel's rate limit can take
  (so a throttled channel backs up in Postgres, not in the send stage, and
  never holds other channels up), nothing for a channel whose circuit is
  open, nothing for paused campaigns. It runs right after a stage queues a
  touch that is already due, every 0.2 s while touches are going out, and
  otherwise sleeps until the next touch is due (at most a second).

The queue is indexed by (partition, due time) over unreleased rows, so a
tick reads only what is due however many touches are pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from agents import topology
from agents.context import PipelineContext, get_context
from agents.lead_states import Step, rank
from agents.quarantine import QuarantinesDeadLetters
from agents.runtime import (
    BatchResult,
    Item,
    Stage,
    handled_up_to,
    hold_until_done,
    runner_for,
)
from sinks.lead_state import StateChange, write_state_changes
from sinks.schedule_store import (
    DueTouch,
    PendingTouch,
    earlier_payloads,
    mark_emitted,
    next_due,
    queue_touches,
    release_due,
    requeue_unhandled_releases,
    stalled_sequences,
)
from sinks.send_ledger import accepted_counts
from streams.app import app
from streams.campaign import Campaign, Channel
from streams.codec import AvroCodec
from streams.send_window import next_send_time
from streams.state_machine import TERMINAL, State
from streams.watchdog import WatchdogSettings

__all__ = [
    "CampaignLimits",
    "Releaser",
    "ScheduleStage",
    "SequenceStage",
    "Sweeper",
    "touch_priority",
]

log = logging.getLogger(__name__)
CHANNELS = ("sms", "voice", "email")
_UNLIMITED_PER_TICK = 2000
#: Seconds between release ticks while touches are going out.
_TICK_S = 0.2
#: Longest sleep of the release loop when nothing is due (a new touch due now
#: wakes it at once; this bounds how late a missed wake-up can make one).
_IDLE_S = 1.0
#: ``Releaser._next_due`` when nothing is queued on the worker's partitions.
_NOTHING_QUEUED = datetime.max.replace(tzinfo=UTC)


def touch_priority(campaign: Campaign, tier: str, score: float) -> int:
    """Higher is released first: the tier, then the score."""
    tiers = len(campaign.qualification.tiers)
    return (tiers - campaign.qualification.priority(tier)) * 1000 + round(score * 10)


def _ms(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromtimestamp(int(value) / 1000, UTC)


class _Queueing:
    """What the two scheduling stages share: building and queueing touches."""

    name: ClassVar[str] = "schedule"

    def __init__(self, ctx: PipelineContext) -> None:
        self.ctx = ctx
        self.db = ctx.db(self.name)
        self.due_codec = AvroCodec("leadflow.TouchDue", subject=ctx.topic("touch-due"))

    def pending(
        self,
        campaign: Campaign,
        base: dict[str, Any],
        touch: int,
        after: datetime,
        partition: int,
    ) -> PendingTouch:
        step = campaign.touch(touch)
        due = next_send_time(campaign, base["timezone"], base.get("state"), after + step.delay)
        variant = campaign.choose_variant(step, base["lead_id"])
        record = {
            **base,
            "touch": touch,
            "channel": step.channel,
            "persona": step.persona,
            "template": f"touch-{touch}",
            "variant": None if variant.name == "default" else variant.name,
            "due_at": due,
            "attempt": 1,
        }
        return PendingTouch(
            campaign_id=base["campaign_id"],
            lead_id=base["lead_id"],
            touch=touch,
            kafka_partition=partition,
            channel=step.channel,
            priority=int(base["priority"]),
            due_at=due,
            payload=self.due_codec.encode(record),
        )

    async def write(self, changes: list[StateChange], touches: list[PendingTouch]) -> None:
        async def action() -> None:
            async with self.db.transaction() as conn:
                await write_state_changes(conn, changes)
                await queue_touches(conn, touches)

        if changes or touches:
            await hold_until_done(action, "schedule: queue")
        now = self.ctx.clock.now()
        if _releaser is not None and any(t.due_at <= now for t in touches):
            _releaser.wake.set()  # due already: release it now, not at the next tick


class ScheduleStage(_Queueing, QuarantinesDeadLetters, Stage):
    """``scored`` -> touch 1 queued."""

    name = "schedule"
    input_schema = "leadflow.ScoredLead"

    async def handle(self, items: Sequence[Item]) -> BatchResult:
        result = BatchResult()
        campaigns = await self.ctx.campaigns.get_many(i.campaign_id for i in items)
        changes: list[StateChange] = []
        touches: list[PendingTouch] = []
        now = self.ctx.clock.now()
        for item in items:
            rec = item.record
            if not rec["qualified"]:
                continue
            view = campaigns.get(item.campaign_id or "")
            if view is None:
                continue  # the score stage dead-letters unknown campaigns
            current = self.ctx.states.get(item.campaign_id or "", item.lead_id)
            if current is not None and (
                current.state in TERMINAL
                or rank(current.state, current.touch) > rank(State.IN_SEQUENCE, 1)
            ):
                continue  # a replay: the sequence has moved on
            try:
                applied = self.ctx.states.advance(
                    item,
                    [Step(State.ENRICHED), Step(State.QUALIFIED), Step(State.IN_SEQUENCE, 1)],
                    at_ms=self.ctx.clock.now_ms(),
                    create=True,
                )
            except Exception as exc:
                result.failures.append((item, exc))
                continue
            changes += [StateChange(a.before, a.after) for a in applied]
            base = {
                "campaign_id": item.campaign_id,
                "lead_id": item.lead_id,
                "priority": touch_priority(view.campaign, rec["tier"], rec["score"]),
                "tier": rec["tier"],
                "event_time": rec["event_time"],
                "to_phone": rec.get("phone_e164"),
                "to_email": rec.get("email"),
                "first_name": rec.get("first_name"),
                "last_name": rec.get("last_name"),
                "company": rec.get("company"),
                "title": rec.get("title"),
                "timezone": rec["timezone"],
                "state": rec.get("state"),
                "identity_key": rec.get("identity_key"),
            }
            touches.append(self.pending(view.campaign, base, 1, now, item.partition))
        await self.write(changes, touches)
        return result


class SequenceStage(_Queueing, QuarantinesDeadLetters, Stage):
    """``sent`` -> the next touch queued, or the lead's end state."""

    name = "sequence"
    input_schema = "leadflow.TouchSent"

    async def handle(self, items: Sequence[Item]) -> BatchResult:
        result = BatchResult()
        campaigns = await self.ctx.campaigns.get_many(i.campaign_id for i in items)
        todo: list[tuple[Item, Campaign, int]] = []
        # A replayed outcome whose lead has moved on re-writes the lead's row:
        # after a crash the mirror may be behind the table (a no-op otherwise).
        changes: list[StateChange] = []
        for item in items:
            rec = item.record
            k = int(rec["touch"])
            view = campaigns.get(item.campaign_id or "")
            if k < 1 or view is None or rec["status"] == "ambiguous":
                continue  # compliance messages; reconcile handles ambiguous sends
            current = self.ctx.states.get(item.campaign_id or "", item.lead_id)
            if current is None:
                continue
            if current.state in TERMINAL:
                changes.append(StateChange(current, current))
            elif current.state in (State.IN_SEQUENCE, State.RECONCILE) and current.touch == k:
                todo.append((item, view.campaign, k))
            elif current.state is State.IN_SEQUENCE and current.touch == k + 1:
                todo.append((item, view.campaign, k))  # replay: re-queue k + 1 (no-op if queued)
                changes.append(StateChange(current, current))
        if not todo:
            await self.write(changes, [])
            return result
        async with self.db.transaction() as conn:
            previous = await earlier_payloads(
                conn, [(i.campaign_id or "", i.lead_id, k) for i, _, k in todo]
            )
            finished = [
                (i.campaign_id or "", i.lead_id) for i, c, k in todo if k >= len(c.sequence)
            ]
            accepted = await accepted_counts(conn, finished)
        touches: list[PendingTouch] = []
        now_ms = self.ctx.clock.now_ms()
        for item, campaign, k in todo:
            key = (item.campaign_id or "", item.lead_id)
            try:
                if k >= len(campaign.sequence):
                    done = accepted.get(key, 0) > 0
                    step = (
                        Step(State.COMPLETED, reason=f"accepted:{accepted.get(key, 0)}")
                        if done
                        else Step(State.FAILED, reason="no_touch_accepted")
                    )
                    applied = self.ctx.states.advance(item, [step], at_ms=now_ms)
                else:
                    payload = previous.get((*key, k))
                    if payload is None:
                        raise LookupError(f"touch {k} of the lead is not in the queue")
                    base = self.due_codec.decode(payload)
                    sent_at = _ms(item.record["sent_at"])
                    touches.append(self.pending(campaign, base, k + 1, sent_at, item.partition))
                    applied = self.ctx.states.advance(
                        item, [Step(State.IN_SEQUENCE, k + 1)], at_ms=now_ms
                    )
            except Exception as exc:
                result.failures.append((item, exc))
                continue
            changes += [StateChange(a.before, a.after) for a in applied]
        await self.write(changes, touches)
        return result


@dataclass
class _Budget:
    """Token bucket of one channel: how many touches a tick may release."""

    tokens: float = 0.0
    last: float = field(default_factory=time.monotonic)

    def take(self, per_second: float | None, burst: float) -> int:
        if per_second is None:
            return _UNLIMITED_PER_TICK
        now = time.monotonic()
        self.tokens = min(burst, self.tokens + (now - self.last) * per_second)
        self.last = now
        return int(self.tokens)

    def spend(self, n: int, per_second: float | None) -> None:
        if per_second is not None:
            self.tokens -= n


class CampaignLimits:
    """Each campaign's own per-channel rate and daily cap, in campaign time.

    A campaign's ``channels.<ch>.rate`` and ``daily_cap`` are business rules
    ("100 texts a minute, 2,000 a day for this campaign"), so they run on the
    campaign clock: at ``LEADFLOW_TIME_SCALE`` 3600 a rate of 100/60 allows
    100 sends per wall second. (The provider accounts' own limits, shared by
    all campaigns, are real quotas and run on wall time; see providers/.)
    Each worker takes its share of both, like the provider limits: the
    fraction of the partitions it owns. Daily counts are per campaign-clock
    day (UTC) and kept in memory, so a worker restart starts the day afresh.
    """

    def __init__(self, time_scale: float) -> None:
        self.time_scale = time_scale
        self._buckets: dict[tuple[str, str], _Budget] = {}
        self._days: dict[tuple[str, str], tuple[str, int]] = {}
        self._capped: dict[str, set[str]] = {}

    def take(self, campaign: Campaign, channel: str, share: float, now: datetime) -> bool:
        """Spend one send of ``campaign`` on ``channel`` if its limits allow it now."""
        settings = campaign.channel_settings(cast(Channel, channel))
        key = (campaign.id, channel)
        day = now.date().isoformat()
        if settings.daily_cap is not None:
            seen_day, used = self._days.get(key, (day, 0))
            used = used if seen_day == day else 0
            if used >= max(1, int(settings.daily_cap * share)):
                self._capped.setdefault(channel, set()).add(campaign.id)
                return False
            self._days[key] = (day, used + 1)
        rate = settings.rate_limit()
        if rate is not None:
            per_second = rate.count / rate.per * self.time_scale * share
            bucket = self._buckets.setdefault(key, _Budget(tokens=1.0))
            burst = max(1.0, per_second * 2 * _TICK_S)  # two ticks' worth: evenly spread
            if bucket.take(per_second, burst) < 1:
                if settings.daily_cap is not None:  # not sent after all
                    self._days[key] = (day, self._days[key][1] - 1)
                return False
            bucket.spend(1, per_second)
        return True

    def exhausted(self, channel: str, now: datetime) -> list[str]:
        """Campaigns that reached their daily cap on ``channel`` today (skip them in queries)."""
        day = now.date().isoformat()
        capped = self._capped.get(channel, set())
        still = {c for c in capped if self._days.get((c, channel), (day, 0))[0] == day}
        self._capped[channel] = still
        return sorted(still)


class Releaser:
    """Moves due touches of this worker's partitions from the queue to ``touch-due``."""

    def __init__(self, ctx: PipelineContext, app_: Any) -> None:
        self.ctx = ctx
        self.app = app_
        self.db = ctx.db("release")
        self.topic = ctx.topic("touch-due")
        self.scored = ctx.topic("scored")
        self.budgets = {c: _Budget() for c in CHANNELS}
        self._share: tuple[int, int] | None = None
        self.released = 0
        self.limits = CampaignLimits(ctx.settings.time_scale)
        #: Set by the stages when they queue a touch that is due already.
        self.wake = asyncio.Event()
        #: The earliest queued touch at the last idle check (campaign time): until
        #: then a tick would release nothing, so the loop only re-checks (one
        #: query a second instead of a transaction per channel). None: tick.
        self._next_due: datetime | None = None

    async def run(self) -> None:
        """Release due touches until cancelled (the worker's release task)."""
        while True:
            try:
                released = await self.tick() if self._may_be_due() else 0
                wait = _TICK_S if released else await self.idle_wait()
            except Exception as exc:  # survive a bad tick (Postgres blip, rebalance)
                log.warning("release: tick failed (%s); next tick retries", type(exc).__name__)
                self._next_due = None
                wait = _TICK_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=wait)
            if self.wake.is_set():  # a stage queued a touch due now
                self._next_due = None
            self.wake.clear()

    def _may_be_due(self) -> bool:
        """Whether a tick can release anything: the last check saw a touch due by now."""
        return self._next_due is None or self.ctx.clock.now() >= self._next_due

    async def idle_wait(self) -> float:
        """Wall seconds to sleep after a tick that released nothing.

        Until the next touch is due, at most ``_IDLE_S``; ``_TICK_S`` when a
        touch is due but was held back (a rate limit, an open circuit, a
        paused campaign), so it goes as soon as it may.

        Until the next check, ticks are skipped while that touch is not due
        (:meth:`_may_be_due`); a stage's wake-up ends the skipping at once.
        """
        self._next_due = None
        partitions = self._partitions()
        if not partitions:
            return _IDLE_S
        async with self.db.transaction() as conn:
            due = await next_due(conn, partitions=partitions)
        if due is None:
            self._next_due = _NOTHING_QUEUED
            return _IDLE_S
        self._next_due = due
        return min(_IDLE_S, max(_TICK_S, self.ctx.clock.wall_seconds_until(due)))

    def _partitions(self) -> list[int]:
        assigned = self.app.consumer.assignment()
        parts = sorted(tp.partition for tp in assigned if tp.topic == self.scored)
        total = self.ctx.settings.topic_partitions
        if parts and self._share != (len(parts), total):
            self._share = (len(parts), total)
            self.ctx.providers.set_partition_share(len(parts), total)
        return parts

    def _rate(self, channel: str) -> tuple[float | None, float]:
        guard = self.ctx.providers.guards.get(channel)
        limiter = getattr(guard, "limiter", None)
        rate = getattr(limiter, "rate", None)
        if limiter is None or rate is None:
            return None, 0.0
        share = float(getattr(limiter, "share", 1.0))
        per_second = rate.count / rate.per * share
        # Room for two ticks of sends: enough that a 0.2 s tick never caps a fast
        # channel below its rate, small enough that releases stay evenly spread.
        return per_second, max(1.0, rate.count * share / 10, per_second * 2 * _TICK_S)

    async def _within_campaign_limits(
        self, due: list[DueTouch], channel: str, share: float, now: datetime
    ) -> list[DueTouch]:
        """The touches each campaign's own rate and daily cap on ``channel`` allow now."""
        views = await self.ctx.campaigns.get_many({t.campaign_id for t in due})
        kept = []
        for touch in due:  # best priority first, as released
            view = views.get(touch.campaign_id)
            if view is None or self.limits.take(view.campaign, channel, share, now):
                kept.append(touch)
        return kept

    async def tick(self) -> int:
        """Release what is due now; returns how many touches went out."""
        partitions = self._partitions()
        if not partitions:
            return 0
        now = self.ctx.clock.now()
        share = len(partitions) / self.ctx.settings.topic_partitions
        total = 0
        for channel in CHANNELS:
            if (
                channel in self.ctx.providers.guards
                and self.ctx.providers.breaker(channel).state == "open"
            ):
                continue
            per_second, burst = self._rate(channel)
            limit = self.budgets[channel].take(per_second, burst)
            if limit <= 0:
                continue
            async with self.db.transaction() as conn:
                due = await release_due(
                    conn,
                    partitions=partitions,
                    channel=channel,
                    now=now,
                    limit=limit,
                    exclude=self.limits.exhausted(channel, now),
                )
                if due:
                    due = await self._within_campaign_limits(due, channel, share, now)
                if due:
                    futures = [
                        await self.ctx.producer.send(
                            self.topic, t.lead_id.encode(), t.payload, None, None, None
                        )
                        for t in due
                    ]
                    for future in futures:
                        await future
                    await mark_emitted(conn, due, datetime.now(UTC))
            self.budgets[channel].spend(len(due), per_second)
            total += len(due)
        self.released += total
        return total


class Sweeper:
    """Recovers lost ``touch-due`` and ``sent`` events, so no lead waits for ever.

    Two kinds of event can be lost in a crash or a rebalance (Faust commits
    around rebalances are not watertight; see docs/ARCHITECTURE.md):

    - a **released touch** (``touch-due``) that no send stage handled: the
      lead is ``in_sequence`` at touch k, touch k was released, and the
      ledger has nothing for it. The sweeper puts it back in the queue
      (``emitted_at`` cleared) and the releaser emits it again; the send
      stage's claim makes that safe.
    - an **outcome** (``sent``) that no sequence stage handled: the lead is
      ``in_sequence`` at touch k, touch k has a final outcome in the ledger,
      and no touch k + 1 is queued. The sweeper publishes that outcome again,
      rebuilt from the ledger, on the lead's partition of ``sent``; the
      sequence stage queues the next touch or ends the lead, and skips it
      like any replay if the lead moved on meanwhile.

    Each worker sweeps its own partitions, and only what is older than
    ``LEADFLOW_SWEEP_AFTER_S`` and behind what the stage has already
    handled (:meth:`settled_before`).
    """

    #: How much later than its release or outcome an event may be stamped.
    PRODUCE_MARGIN_S: ClassVar[float] = 10.0

    def __init__(self, ctx: PipelineContext, app_: Any, after_s: float) -> None:
        self.ctx = ctx
        self.app = app_
        self.after_s = after_s
        self.db = ctx.db("sweep")
        self.topic = ctx.topic("sent")
        self.due_topic = ctx.topic("touch-due")
        self.codec = AvroCodec("leadflow.TouchSent", subject=self.topic)
        self.republished = 0
        self.rereleased = 0

    async def settled_before(self, topic: str) -> dict[int, datetime]:
        """For each of this worker's partitions of ``topic``, the instant before
        which an event produced there has surely been handled.

        An event still waiting in a backlog is not lost. Where the stage has
        committed everything on a partition, anything older than ``after_s``
        counts. Where a backlog remains, only what is older than the newest
        record handled there (less ``PRODUCE_MARGIN_S``) does: the event is
        produced right after its row is written, so it came before that
        record. A wrong guess costs one duplicate, which the stages skip.
        """
        consumer = self.app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic == topic]
        if not tps:
            return {}
        # The high-water marks the consumer last fetched: asking the broker goes
        # through the consumer's thread, and a sweep every few seconds doing that
        # starved the fetches and commits of the whole worker. A stale mark only
        # makes a sweep early, which costs a duplicate the stages skip.
        ends = {tp: consumer.highwater(tp) for tp in tps}
        committed = consumer._committed_offset  # Faust's last committed offsets
        progress = handled_up_to(topic)
        now = time.time()
        out: dict[int, datetime] = {}
        for tp in tps:
            bound = now - self.after_s
            end = ends.get(tp)
            if end is None or (committed.get(tp) or 0) < end:
                handled = progress.get(tp.partition)
                if handled is None:
                    continue
                bound = min(bound, handled - self.PRODUCE_MARGIN_S)
            out[tp.partition] = datetime.fromtimestamp(bound, UTC)
        return out

    async def sweep(self) -> int:
        """Recover this worker's lost releases and outcomes; return how many."""
        return await self.sweep_releases() + await self.sweep_outcomes()

    async def sweep_releases(self) -> int:
        """Queue again the released touches no send stage handled."""
        settled = await self.settled_before(self.due_topic)
        if not settled:
            return 0
        async with self.db.transaction() as conn:
            n = await requeue_unhandled_releases(conn, settled_before=settled)
        if n:
            log.warning("sweep: queued again %d released touch(es) no send stage handled", n)
        self.rereleased += n
        return n

    async def sweep_outcomes(self) -> int:
        """Publish again the outcomes whose sequence never moved on."""
        settled = await self.settled_before(self.topic)
        if not settled:
            return 0
        async with self.db.transaction() as conn:
            lost = await stalled_sequences(conn, settled_before=settled)
        futures = [
            await self.ctx.producer.send(
                self.topic,
                str(t.record["lead_id"]).encode(),
                self.codec.encode(t.record),
                t.kafka_partition,
                None,
                None,
            )
            for t in lost
        ]
        for future in futures:
            await future
        if lost:
            log.warning(
                "sweep: re-published %d touch outcome(s) whose sequence never moved on", len(lost)
            )
        self.republished += len(lost)
        return len(lost)


_releaser: Releaser | None = None
_sweeper: Sweeper | None = None


@app.agent(topology.topic("scored"), name="schedule")
async def schedule_agent(stream: Any) -> None:
    """Faust agent: queue touch 1 of qualified leads."""
    ctx = await get_context(app, topology.lead_state_table)
    await runner_for(ScheduleStage(ctx), ctx, "scored").run(stream)


@app.agent(topology.topic("sent"), name="sequence")
async def sequence_agent(stream: Any) -> None:
    """Faust agent: queue the next touch after each outcome, or end the lead."""
    ctx = await get_context(app, topology.lead_state_table)
    await runner_for(SequenceStage(ctx), ctx, "sent").run(stream)


@app.task  # type: ignore[untyped-decorator]
async def release_due_touches() -> None:
    """Release due touches for the worker's life (see :meth:`Releaser.run`)."""
    global _releaser
    ctx = await get_context(app, topology.lead_state_table)
    _releaser = Releaser(ctx, app)
    await _releaser.run()


def _register_sweeper() -> None:
    config = WatchdogSettings.from_env()
    if config.sweep_interval_s <= 0:
        return

    @app.timer(interval=config.sweep_interval_s, name="sweep-lost-outcomes")  # type: ignore[untyped-decorator]
    async def sweep_lost_outcomes() -> None:
        """Re-publish touch outcomes whose lead never moved on."""
        global _sweeper
        ctx = await get_context(app, topology.lead_state_table)
        if _sweeper is None:
            _sweeper = Sweeper(ctx, app, config.sweep_after_s)
        try:
            await _sweeper.sweep()
        except Exception as exc:  # a timer must survive a bad sweep (Postgres blip, rebalance)
            log.warning("sweep: failed (%s); next sweep retries", type(exc).__name__)


_register_sweeper()
