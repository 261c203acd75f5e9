"""The sink contract on real Postgres: batches per partition, idempotent, nothing lost on a kill."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from sinks.contract import SinkFullError, SinkRecord
from sinks.db import StageDatabase
from sinks.dead_letter_sink import DeadLetterSink
from streams.errors import DatabaseUnavailableError
from streams.infra.postgres import LocalPostgres
from streams.settings import Settings


def dead_letter(topic: str, offset: int, attempt: int = 1) -> dict[str, Any]:
    return {
        "original_topic": topic,
        "original_partition": 0,
        "original_offset": offset,
        "original_key": b"lead",
        "stage": "score",
        "reason": "schema_mismatch",
        "error_class": "SchemaMismatchError",
        "error_message": "bad",
        "attempt": attempt,
        "payload": b"\x00",
        "campaign_id": "c",
        "lead_id": f"l{offset}",
        "failed_at": datetime(2026, 11, 26, tzinfo=UTC),
    }


async def stored(dsn: str, topic: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM dead_letters WHERE original_topic = %s", (topic,)
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[StageDatabase]:
    stage = StageDatabase(settings.worker_dsn, f"sink-{uuid.uuid4().hex[:8]}")
    try:
        yield stage
    finally:
        await stage.aclose()


async def test_flush_writes_each_partition_once_and_replays_change_nothing(
    db: StageDatabase, dsn: str
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    flushed: list[str] = []
    sink = DeadLetterSink(db, on_flush=lambda name, _s: flushed.append(name))
    for offset in range(10):
        sink.add(dead_letter(topic, offset), "dead-letter", offset % 3, offset)
    assert sink.pending == 10
    done = await sink.flush()
    assert done == {("dead-letter", 0): 9, ("dead-letter", 1): 7, ("dead-letter", 2): 8}
    assert sink.pending == 0
    assert flushed == ["dead_letters"] * 3
    for offset in range(10):  # the same records again: at-least-once delivery
        sink.add(dead_letter(topic, offset), "dead-letter", 0, offset)
    await sink.flush()
    assert await stored(dsn, topic) == 10


async def test_a_sink_holds_no_more_than_max_pending(db: StageDatabase) -> None:
    sink = DeadLetterSink(db, max_pending=2)
    sink.add(dead_letter("x", 1), "dead-letter", 0, 1)
    sink.add(dead_letter("x", 2), "dead-letter", 0, 2)
    with pytest.raises(SinkFullError, match="flush first"):
        sink.add(dead_letter("x", 3), "dead-letter", 0, 3)


class SlowDeadLetterSink(DeadLetterSink):
    """Writes half the batch, then waits, so the connection can be killed mid-batch."""

    started: asyncio.Event

    async def write(
        self, conn: psycopg.AsyncConnection[tuple[Any, ...]], records: Sequence[SinkRecord[Any]]
    ) -> None:
        half = len(records) // 2
        await super().write(conn, records[:half])
        self.started.set()
        await conn.execute("SELECT pg_sleep(30)")
        await super().write(conn, records[half:])


async def test_killing_the_connection_mid_batch_loses_nothing_and_duplicates_nothing(
    db: StageDatabase, dsn: str, settings: Settings
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    sink = SlowDeadLetterSink(db)
    sink.started = asyncio.Event()
    records = [dead_letter(topic, offset) for offset in range(200)]
    for offset, record in enumerate(records):
        sink.add(record, "dead-letter", 0, offset)

    flush = asyncio.create_task(sink.flush())
    await asyncio.wait_for(sink.started.wait(), 10)
    superuser = LocalPostgres(settings).superuser_dsn()  # may signal any backend
    async with await psycopg.AsyncConnection.connect(superuser, autocommit=True) as admin:
        cur = await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"leadflow-{db.name}",),
        )
        assert [row[0] for row in await cur.fetchall()] == [True]
    with pytest.raises(DatabaseUnavailableError):
        await flush
    assert await stored(dsn, topic) == 0  # the half written was rolled back
    assert sink.pending == 200  # and nothing was dropped

    # The runner discards and re-adds the held batch, then flushes again (reconnecting).
    retry = DeadLetterSink(db)
    for offset, record in enumerate(records):
        retry.add(record, "dead-letter", 0, offset)
    assert await retry.flush() == {("dead-letter", 0): 199}
    assert await stored(dsn, topic) == 200
