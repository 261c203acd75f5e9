"""The sequence sweeper re-publishes a touch outcome whose lead never moved on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fakes import FakeProducer, seed_campaign

from agents.context import PipelineContext
from agents.runtime import handled_up_to
from agents.schedule import Sweeper
from sinks.db import StageDatabase
from sinks.schedule_store import requeue_unhandled_releases, stalled_sequences
from streams.clock import CampaignClock
from streams.codec import AvroCodec
from streams.settings import Settings

LONG_AGO = datetime.now(UTC) - timedelta(minutes=10)


def seed(dsn: str, campaign: str, lead: str, *, state: str = "in_sequence", touch: int = 2,
         status: str = "accepted", completed_at: datetime = LONG_AGO,
         next_queued: bool = False) -> None:  # fmt: skip
    seed_campaign(dsn, campaign)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO leads (campaign_id, lead_id, state, touch, version) "
            "VALUES (%s, %s, %s, %s, 5)",
            (campaign, lead, state, touch),
        )
        for k in range(1, touch + 1 + int(next_queued)):
            conn.execute(
                "INSERT INTO pending_touches (campaign_id, lead_id, touch, kafka_partition, "
                "channel, priority, due_at, payload, emitted_at) "
                "VALUES (%s, %s, %s, 3, 'sms', 1, %s, '\\x00', %s)",
                (campaign, lead, k, LONG_AGO, None if k > touch else LONG_AGO),
            )
        conn.execute(
            "INSERT INTO send_ledger (campaign_id, lead_id, touch, channel, idempotency_key, "
            "status, provider, cost_units, campaign_clock, completed_at) "
            "VALUES (%s, %s, %s, 'voice', %s, %s, 'sim', 3.0, %s, %s)",
            (campaign, lead, touch, f"{campaign}:{lead}:{touch}", status, LONG_AGO, completed_at),
        )


async def found(dsn: str, partitions: list[int] | None = None) -> set[str]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        now = datetime.now(UTC)
        rows = await stalled_sequences(conn, settled_before={p: now for p in partitions or [3]})
    return {str(r.record["lead_id"]) for r in rows}


async def test_only_leads_whose_outcome_has_no_next_step_are_found(dsn: str) -> None:
    c = f"sw-{uuid.uuid4().hex[:8]}"
    seed(dsn, c, f"{c}-lost")
    seed(dsn, c, f"{c}-moved-on", next_queued=True)
    seed(dsn, c, f"{c}-recent", completed_at=datetime.now(UTC) + timedelta(minutes=1))
    seed(dsn, c, f"{c}-ended", state="completed")
    seed(dsn, c, f"{c}-in-flight", status="claimed")
    leads = {lead for lead in await found(dsn) if lead.startswith(c)}
    assert leads == {f"{c}-lost"}
    assert not {lead for lead in await found(dsn, [4]) if lead.startswith(c)}  # not ours


@dataclass
class FakeConsumer:
    tps: set[Any] = field(default_factory=set)
    ends: dict[Any, int] = field(default_factory=dict)
    _committed_offset: dict[Any, int] = field(default_factory=dict)

    def assignment(self) -> set[Any]:
        return self.tps

    def highwater(self, tp: Any) -> int | None:
        return self.ends.get(tp)


@dataclass
class FakeApp:
    consumer: FakeConsumer


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


async def test_a_sweep_publishes_the_ledgers_outcome_on_the_leads_partition(
    settings: Settings, dsn: str
) -> None:
    c = f"sw-{uuid.uuid4().hex[:8]}"
    seed(dsn, c, f"{c}-lost")
    ctx = PipelineContext(
        settings=settings,
        clock=CampaignClock.realtime(),
        campaigns=None,  # type: ignore[arg-type]  # the sweeper reads no campaigns
        providers=None,  # type: ignore[arg-type]
        states=None,  # type: ignore[arg-type]
        producer=FakeProducer(),
    )
    ctx._dbs["sweep"] = StageDatabase(settings.worker_dsn, "sweep")
    sent3, sent4 = TP(settings.topic_name("sent"), 3), TP(settings.topic_name("sent"), 4)
    consumer = FakeConsumer({sent3, sent4}, ends={sent3: 10, sent4: 10})
    consumer._committed_offset = {sent3: 9}  # a backlog: the outcome may still be on its way
    progress = handled_up_to(settings.topic_name("sent"))
    sweeper = Sweeper(ctx, FakeApp(consumer), after_s=60)
    try:
        assert await sweeper.sweep() == 0  # a backlog, and nothing handled yet
        progress[3] = (LONG_AGO + timedelta(seconds=5)).timestamp()
        assert await sweeper.sweep() == 0  # handled only up to just after the outcome
        progress[3] = (LONG_AGO + timedelta(minutes=1)).timestamp()
        assert await sweeper.sweep() >= 1  # handled well past it: the event was missed
        progress.clear()
        consumer._committed_offset = {sent3: 10}  # caught up: the lead really missed its event
        assert await sweeper.sweep() >= 1
    finally:
        await ctx._dbs["sweep"].aclose()
    producer = ctx.producer
    assert isinstance(producer, FakeProducer)
    codec = AvroCodec("leadflow.TouchSent")
    mine = [s for s in producer.to(settings.topic_name("sent")) if s.key == f"{c}-lost".encode()]
    assert len(mine) == 2
    record = codec.decode(mine[0].value)
    assert (record["touch"], record["status"], record["channel"], mine[0].partition) == (
        2,
        "accepted",
        "voice",
        3,
    )
    assert record["idempotency_key"] == f"{c}:{c}-lost:2"


@pytest.mark.parametrize("after_s", [0.0])
def test_the_sweeper_is_configured_from_the_environment(after_s: float) -> None:
    from streams.watchdog import WatchdogSettings

    config = WatchdogSettings.from_env({"LEADFLOW_SWEEP_AFTER_S": str(after_s)})
    assert config.sweep_after_s == after_s
    assert WatchdogSettings.from_env({}).sweep_interval_s == 15.0


async def test_a_released_touch_no_send_stage_handled_is_queued_again(dsn: str) -> None:
    c = f"sw-{uuid.uuid4().hex[:8]}"
    seed(dsn, c, f"{c}-lost", touch=2)
    seed(dsn, c, f"{c}-sent", touch=2)
    seed(dsn, c, f"{c}-ended", touch=2, state="completed")
    with psycopg.connect(dsn) as conn:  # touch 2 of -lost and -ended: released, no ledger row
        conn.execute(
            "DELETE FROM send_ledger WHERE campaign_id = %s AND lead_id <> %s",
            (c, f"{c}-sent"),
        )
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        assert await requeue_unhandled_releases(conn, settled_before={4: datetime.now(UTC)}) == 0
        recent = {3: LONG_AGO - timedelta(minutes=1)}  # released after this bound: not yet
        assert await requeue_unhandled_releases(conn, settled_before=recent) == 0
        n = await requeue_unhandled_releases(conn, settled_before={3: datetime.now(UTC)})
        await conn.commit()
    assert n >= 1
    with psycopg.connect(dsn) as conn:
        emitted = dict(
            conn.execute(
                "SELECT lead_id, emitted_at IS NOT NULL FROM pending_touches "
                "WHERE campaign_id = %s AND touch = 2",
                (c,),
            ).fetchall()
        )
    assert emitted == {f"{c}-lost": False, f"{c}-sent": True, f"{c}-ended": True}
