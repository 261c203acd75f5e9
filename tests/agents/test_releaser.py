"""The release loop's timing (agents/schedule.py ``Releaser``, real Postgres).

A touch queued already due wakes the loop at once; otherwise it sleeps until
the next touch is due, at most a second, and polls every tick while a due
touch is held back. While nothing is due, the loop only re-checks the queue
and skips the per-channel release transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import psycopg
import pytest
from fakes import FakeProducer, seed_campaign

import agents.schedule
from agents.context import PipelineContext
from agents.schedule import Releaser, ScheduleStage
from sinks.schedule_store import PendingTouch
from streams.clock import CampaignClock
from streams.settings import Settings


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class FakeConsumer:
    tps: set[TP] = field(default_factory=set)

    def assignment(self) -> set[TP]:
        return self.tps


@dataclass
class FakeApp:
    consumer: FakeConsumer


class FakeProviders:
    guards: ClassVar[dict[str, Any]] = {}

    def set_partition_share(self, owned: int, total: int) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _touch(release: Releaser, campaign: str, lead: str, due: datetime) -> PendingTouch:
    (part,) = release._partitions()
    return PendingTouch(campaign, lead, 1, part, "sms", 1, due, b"\x00")


def _queue(dsn: str, touch: PendingTouch) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO pending_touches (campaign_id, lead_id, touch, kafka_partition, channel, "
            "priority, due_at, payload) VALUES (%s, %s, 1, %s, 'sms', 1, %s, '\\x00')",
            (touch.campaign_id, touch.lead_id, touch.kafka_partition, touch.due_at),
        )


@pytest.fixture
async def releaser(settings: Settings, dsn: str) -> AsyncIterator[tuple[Releaser, str]]:
    campaign = f"rl-{uuid.uuid4().hex[:8]}"
    seed_campaign(dsn, campaign)
    ctx = PipelineContext(
        settings=settings,
        clock=CampaignClock.realtime(),
        campaigns=None,  # type: ignore[arg-type]  # idle_wait reads no campaigns
        providers=FakeProviders(),  # type: ignore[arg-type]
        states=None,  # type: ignore[arg-type]
        producer=FakeProducer(),
    )
    part = 2_000_000 + uuid.uuid4().int % 1_000_000_000  # no other test queues on it
    app = FakeApp(FakeConsumer({TP(settings.topic_name("scored"), part)}))
    yield Releaser(ctx, app), campaign
    await ctx.aclose()


async def test_an_empty_queue_sleeps_the_longest_wait(releaser: tuple[Releaser, str]) -> None:
    assert await releaser[0].idle_wait() == agents.schedule._IDLE_S


async def test_the_loop_sleeps_until_the_next_touch_is_due(
    releaser: tuple[Releaser, str], dsn: str
) -> None:
    release, campaign = releaser
    _queue(dsn, _touch(release, campaign, "soon", datetime.now(UTC) + timedelta(seconds=0.6)))
    assert 0.4 < await release.idle_wait() <= 0.6


async def test_a_due_touch_held_back_is_polled_every_tick(
    releaser: tuple[Releaser, str], dsn: str
) -> None:
    release, campaign = releaser
    _queue(dsn, _touch(release, campaign, "held", datetime.now(UTC) - timedelta(seconds=5)))
    assert await release.idle_wait() == agents.schedule._TICK_S


async def test_a_stage_queueing_a_touch_due_now_wakes_the_loop(
    releaser: tuple[Releaser, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    release, campaign = releaser
    monkeypatch.setattr(agents.schedule, "_releaser", release)
    stage = ScheduleStage(release.ctx)
    await stage.write(
        [], [_touch(release, campaign, "later", datetime.now(UTC) + timedelta(hours=1))]
    )
    assert not release.wake.is_set()
    await stage.write([], [_touch(release, campaign, "now", datetime.now(UTC))])
    assert release.wake.is_set()


async def test_after_an_idle_check_ticks_wait_for_the_next_due_touch(
    releaser: tuple[Releaser, str], dsn: str
) -> None:
    release, campaign = releaser
    await release.idle_wait()
    assert not release._may_be_due()  # nothing queued: no tick until something is
    _queue(dsn, _touch(release, campaign, "soon", datetime.now(UTC) + timedelta(seconds=0.3)))
    await release.idle_wait()
    assert not release._may_be_due()
    await asyncio.sleep(0.35)
    assert release._may_be_due()


async def test_a_touch_held_back_keeps_the_loop_ticking(
    releaser: tuple[Releaser, str], dsn: str
) -> None:
    release, campaign = releaser
    _queue(dsn, _touch(release, campaign, "held", datetime.now(UTC) - timedelta(seconds=5)))
    await release.idle_wait()
    assert release._may_be_due()


async def test_the_idle_loop_skips_ticks_until_woken(
    releaser: tuple[Releaser, str], dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, campaign = releaser
    _queue(dsn, _touch(release, campaign, "later", datetime.now(UTC) + timedelta(hours=1)))
    ticks: list[float] = []

    async def tick() -> int:
        ticks.append(time.monotonic())
        return 0

    monkeypatch.setattr(release, "tick", tick)
    monkeypatch.setattr(agents.schedule, "_IDLE_S", 0.1)
    loop = asyncio.ensure_future(release.run())
    try:
        await asyncio.sleep(0.6)  # about six idle checks
        assert len(ticks) == 1  # the first, before anything was known
        release.wake.set()
        await asyncio.sleep(0.3)
        assert len(ticks) == 2  # the wake-up ticks once, then the checks skip again
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
