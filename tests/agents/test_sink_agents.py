"""Sink stages: flush before ack, and pause the partitions while Postgres is down."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from faust.types import TP

from agents.runtime import Item
from agents.sink_agents import DeadLetterSinkStage
from sinks.contract import SinkRecord
from sinks.db import StageDatabase
from sinks.dead_letter_sink import DeadLetterSink
from streams.errors import DatabaseUnavailableError
from streams.settings import Settings
from tests.sinks.test_contract import dead_letter, stored


class FlakySink(DeadLetterSink):
    """Fails its first ``failures`` flushes as if Postgres were down."""

    failures = 0

    async def write(
        self, conn: psycopg.AsyncConnection[tuple[Any, ...]], records: Sequence[SinkRecord[Any]]
    ) -> None:
        if self.failures:
            self.failures -= 1
            raise DatabaseUnavailableError("test: Postgres down")
        await super().write(conn, records)


def item(record: dict[str, Any], partition: int, offset: int) -> Item:
    return Item(None, "dead-letter", partition, offset, b"k", b"", 1, record)


async def test_partitions_pause_while_the_sink_fails_and_resume_after(
    settings: Settings, dsn: str
) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    db = StageDatabase(settings.worker_dsn, "sink-test")
    sink = FlakySink(db)
    sink.failures = 2
    paused: list[set[TP]] = []
    resumed: list[set[TP]] = []
    stage = DeadLetterSinkStage(sink, pause=paused.append, resume=resumed.append)
    items = [item(dead_letter(topic, n), n % 2, n) for n in range(6)]
    try:
        for _ in range(2):  # the runner holds the batch and hands it back
            with pytest.raises(DatabaseUnavailableError):
                await stage.handle(items)
        assert paused == [{TP("dead-letter", 0), TP("dead-letter", 1)}]  # paused once
        assert stage.backpressure_events == 1
        assert resumed == []
        assert await stored(dsn, topic) == 0
        result = await stage.handle(items)
    finally:
        await db.aclose()
    assert result.outputs == [] and result.failures == []
    assert resumed == [{TP("dead-letter", 0), TP("dead-letter", 1)}]
    assert await stored(dsn, topic) == 6  # each record once, though handed over three times
    assert sink.pending == 0
