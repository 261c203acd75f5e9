"""The scheduler's queue (sinks/schedule_store.py) on the real Postgres.

Every test queues on Kafka partition numbers of its own (far above any real
partition count), so other tests' touches never show up in its releases.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from sinks.campaigns import CampaignStore
from sinks.schedule_store import (
    DueTouch,
    PendingTouch,
    earlier_payloads,
    mark_emitted,
    next_due,
    queue_touches,
    release_due,
    requeue,
)
from streams.campaign import load_campaign
from streams.settings import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"
NOW = datetime(2026, 1, 5, 15, 30, tzinfo=UTC)

Conn = psycopg.AsyncConnection[tuple[Any, ...]]


def new_campaign(dsn: str) -> str:
    cid = f"t-{uuid.uuid4().hex[:12]}"
    CampaignStore(dsn).create(dataclasses.replace(load_campaign(EXAMPLE), id=cid))
    return cid


def new_partition() -> int:
    """A partition number no other test queues on."""
    return 1_000_000 + uuid.uuid4().int % 1_000_000_000


def touch(
    campaign_id: str,
    partition: int,
    *,
    lead_id: str | None = None,
    number: int = 1,
    channel: str = "sms",
    priority: int = 100,
    due_at: datetime = NOW - timedelta(minutes=1),
) -> PendingTouch:
    lead = lead_id or f"lead-{uuid.uuid4().hex[:12]}"
    return PendingTouch(
        campaign_id=campaign_id,
        lead_id=lead,
        touch=number,
        kafka_partition=partition,
        channel=channel,
        priority=priority,
        due_at=due_at,
        payload=f"payload:{campaign_id}:{lead}:{number}".encode(),
    )


def key(t: PendingTouch | DueTouch) -> tuple[str, str, int]:
    return (t.campaign_id, t.lead_id, t.touch)


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
        yield c


async def release(
    conn: Conn,
    partitions: list[int],
    *,
    channel: str = "sms",
    now: datetime = NOW,
    limit: int = 100,
) -> list[DueTouch]:
    """Release without marking anything (the transaction ends, the locks go)."""
    async with conn.transaction():
        return await release_due(conn, partitions=partitions, channel=channel, now=now, limit=limit)


async def test_queueing_again_is_a_no_op(dsn: str, conn: Conn) -> None:
    cid, p = new_campaign(dsn), new_partition()
    t = touch(cid, p)
    await queue_touches(conn, [t])
    replay = dataclasses.replace(t, payload=b"other", priority=1, due_at=NOW - timedelta(days=1))
    await queue_touches(conn, [replay, t])
    await queue_touches(conn, [])
    cur = await conn.execute(
        "SELECT payload, priority, due_at, emitted_at FROM pending_touches WHERE campaign_id = %s",
        (cid,),
    )
    assert await cur.fetchall() == [(t.payload, t.priority, t.due_at, None)]


async def test_release_returns_due_rows_of_the_partitions_and_channel_best_first(
    dsn: str, conn: Conn
) -> None:
    cid, mine, other = new_campaign(dsn), new_partition(), new_partition()
    low = touch(cid, mine, priority=1, due_at=NOW - timedelta(hours=5))
    mid = touch(cid, mine, priority=50, due_at=NOW - timedelta(hours=3))
    high_late = touch(cid, mine, priority=90, due_at=NOW - timedelta(minutes=1))
    high_early = touch(cid, mine, priority=90, due_at=NOW - timedelta(hours=2))
    due_exactly_now = touch(cid, mine, priority=10, due_at=NOW)
    not_due = touch(cid, mine, priority=99, due_at=NOW + timedelta(seconds=1))
    email = touch(cid, mine, channel="email", priority=99)
    elsewhere = touch(cid, other, priority=99)
    await queue_touches(
        conn, [low, mid, high_late, high_early, due_exactly_now, not_due, email, elsewhere]
    )
    released = await release(conn, [mine])
    assert [key(d) for d in released] == [
        key(high_early),
        key(high_late),
        key(mid),
        key(due_exactly_now),
        key(low),
    ]
    assert [d.payload for d in released] == [
        high_early.payload,
        high_late.payload,
        mid.payload,
        due_exactly_now.payload,
        low.payload,
    ]
    assert [key(d) for d in await release(conn, [mine], channel="email")] == [key(email)]
    both = await release(conn, [mine, other])
    assert {key(d) for d in both} == {key(d) for d in released} | {key(elsewhere)}
    assert key(both[0]) == key(elsewhere)  # priority 99 beats 90 across partitions


async def test_release_respects_the_limit(dsn: str, conn: Conn) -> None:
    cid, p = new_campaign(dsn), new_partition()
    touches = [touch(cid, p, priority=n) for n in range(5)]
    await queue_touches(conn, touches)
    assert [key(d) for d in await release(conn, [p], limit=2)] == [
        key(touches[4]),
        key(touches[3]),
    ]
    assert await release(conn, [p], limit=0) == []
    assert await release(conn, [], limit=10) == []
    assert len(await release(conn, [p], limit=10)) == 5


async def test_paused_campaigns_release_nothing_cancelled_ones_do(dsn: str, conn: Conn) -> None:
    store, p = CampaignStore(dsn), new_partition()
    active, paused, cancelled = new_campaign(dsn), new_campaign(dsn), new_campaign(dsn)
    store.pause(paused)
    store.cancel(cancelled)
    touches = {cid: touch(cid, p) for cid in (active, paused, cancelled)}
    unknown = touch(f"t-unknown-{uuid.uuid4().hex[:8]}", p)
    await queue_touches(conn, [*touches.values(), unknown])
    released = {d.campaign_id for d in await release(conn, [p])}
    assert released == {active, cancelled}
    store.resume(paused)
    assert {d.campaign_id for d in await release(conn, [p])} == {active, paused, cancelled}


async def test_rows_locked_by_one_release_are_skipped_by_another(dsn: str) -> None:
    cid, p = new_campaign(dsn), new_partition()
    touches = [touch(cid, p, priority=n) for n in range(4)]
    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as setup,
        await psycopg.AsyncConnection.connect(dsn) as one,
        await psycopg.AsyncConnection.connect(dsn) as two,
    ):
        await queue_touches(setup, touches)
        first = await release_due(one, partitions=[p], channel="sms", now=NOW, limit=2)
        second = await release_due(two, partitions=[p], channel="sms", now=NOW, limit=10)
        assert [key(d) for d in first] == [key(touches[3]), key(touches[2])]
        assert [key(d) for d in second] == [key(touches[1]), key(touches[0])]
        await mark_emitted(one, first, NOW)
        await one.commit()
        await two.rollback()  # the second worker failed to produce: its rows go back
        third = await release(setup, [p])
    assert [key(d) for d in third] == [key(touches[1]), key(touches[0])]


async def test_emitted_rows_are_not_released_again_until_requeued(dsn: str, conn: Conn) -> None:
    cid, p = new_campaign(dsn), new_partition()
    t, other = touch(cid, p, priority=5), touch(cid, p, priority=1)
    await queue_touches(conn, [t, other])
    emitted_at = NOW + timedelta(seconds=3)
    async with conn.transaction():
        released = await release_due(conn, partitions=[p], channel="sms", now=NOW, limit=1)
        assert [key(d) for d in released] == [key(t)]
        await mark_emitted(conn, released, emitted_at)
        await mark_emitted(conn, [], emitted_at)
    assert [key(d) for d in await release(conn, [p], now=NOW + timedelta(days=30))] == [key(other)]
    await queue_touches(conn, [t])  # a replayed schedule does not queue it again
    assert [key(d) for d in await release(conn, [p])] == [key(other)]
    cur = await conn.execute(
        "SELECT emitted_at FROM pending_touches WHERE campaign_id = %s AND lead_id = %s",
        (t.campaign_id, t.lead_id),
    )
    assert await cur.fetchone() == (emitted_at,)

    later = NOW + timedelta(hours=1)
    await requeue(conn, key(t), later)
    cur = await conn.execute(
        "SELECT due_at, emitted_at FROM pending_touches WHERE campaign_id = %s AND lead_id = %s",
        (t.campaign_id, t.lead_id),
    )
    assert await cur.fetchone() == (later, None)
    assert [key(d) for d in await release(conn, [p])] == [key(other)]
    assert [key(d) for d in await release(conn, [p], now=later)] == [key(t), key(other)]


async def test_earlier_payloads_returns_the_queued_payloads_of_known_keys(
    dsn: str, conn: Conn
) -> None:
    cid, p = new_campaign(dsn), new_partition()
    a, b = touch(cid, p, number=1), touch(cid, p, number=2)
    await queue_touches(conn, [a, b])
    await queue_touches(conn, [dataclasses.replace(a, payload=b"replayed")])
    missing = (cid, "no-such-lead", 1)
    found = await earlier_payloads(conn, [key(a), key(b), missing, (cid, a.lead_id, 9)])
    assert found == {key(a): a.payload, key(b): b.payload}
    assert all(isinstance(v, bytes) for v in found.values())
    assert await earlier_payloads(conn, []) == {}


async def test_next_due_is_the_earliest_unreleased_touch_of_the_partitions(dsn: str) -> None:
    c = new_campaign(dsn)
    p, q, other = new_partition(), new_partition(), new_partition()
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        released = touch(c, q, due_at=NOW + timedelta(minutes=5))
        await queue_touches(
            conn,
            [
                touch(c, p, due_at=NOW + timedelta(minutes=30)),
                touch(c, q, due_at=NOW + timedelta(minutes=10)),
                released,
                touch(c, other, due_at=NOW + timedelta(minutes=1)),
            ],
        )
        await mark_emitted(conn, [DueTouch(c, released.lead_id, 1, released.payload)], NOW)
        await conn.commit()
        assert await next_due(conn, partitions=[p, q]) == NOW + timedelta(minutes=10)
        assert await next_due(conn, partitions=[new_partition()]) is None
        assert await next_due(conn, partitions=[]) is None
