"""The sink contract: records in per partition, durable batches out.

A sink is fed one record at a time with :meth:`Sink.add` (the record and the
topic, partition and offset it came from) and made durable with
:meth:`Sink.flush`, once per batch. Records are kept per partition, and each
partition's batch is written in one transaction, so a batch is either all in
Postgres or not at all. Writes must be idempotent upserts on natural keys:
at-least-once delivery and replays then change nothing.

The caller acknowledges a batch's events only after ``flush`` returned. When
Postgres is down, ``flush`` raises :class:`~streams.errors.DatabaseUnavailableError`
and keeps nothing half-written; the caller discards and re-adds the batch on its
next try (see :mod:`agents.sink_agents`, which also pauses the partitions
meanwhile). A sink never holds more than ``max_pending`` records: ``add``
refuses more with :class:`SinkFullError`, so memory stays bounded.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import psycopg

from sinks.db import StageDatabase
from streams import metrics
from streams.errors import DatabaseError

__all__ = ["Sink", "SinkFullError", "SinkRecord"]

R = TypeVar("R")


class SinkFullError(DatabaseError):
    """A sink was given more records than it may hold before a flush."""

    reason = "sink_full"


@dataclass(frozen=True)
class SinkRecord(Generic[R]):
    """One record and where it came from."""

    value: R
    topic: str
    partition: int
    offset: int


class Sink(ABC, Generic[R]):
    """Batches records per partition and writes each batch in one transaction."""

    #: Sink name, for metrics and logs.
    name: ClassVar[str]

    def __init__(
        self,
        db: StageDatabase,
        *,
        max_pending: int = 10_000,
        on_flush: Callable[[str, float], None] | None = None,
    ) -> None:
        self.db = db
        self.max_pending = max_pending
        #: Called with (sink name, seconds) after each partition batch is durable.
        self.on_flush = on_flush
        self._batches: dict[tuple[str, int], list[SinkRecord[R]]] = {}
        self._pending = 0

    @property
    def pending(self) -> int:
        """Records added and not yet flushed."""
        return self._pending

    def add(self, record: R, topic: str, partition: int, offset: int) -> None:
        """Buffer ``record`` for its partition's next batch."""
        if self._pending >= self.max_pending:
            raise SinkFullError(f"sink {self.name}: {self._pending} records pending; flush first")
        self._batches.setdefault((topic, partition), []).append(
            SinkRecord(record, topic, partition, offset)
        )
        self._pending += 1

    def discard(self) -> None:
        """Forget every pending record (the caller will add them again)."""
        self._batches.clear()
        self._pending = 0

    async def flush(self) -> dict[tuple[str, int], int]:
        """Make every pending batch durable; return the last offset written per partition.

        Each partition's batch is one transaction. A partition written before a
        failure stays written (and is not written again); the failing one and
        the rest stay pending.
        """
        done: dict[tuple[str, int], int] = {}
        for tp in list(self._batches):
            records = self._batches[tp]
            started = time.perf_counter()
            with metrics.sink_flush(self.name, len(records)):
                async with self.db.transaction() as conn:
                    await self.write(conn, records)
            del self._batches[tp]
            self._pending -= len(records)
            done[tp] = max(r.offset for r in records)
            if self.on_flush is not None:
                self.on_flush(self.name, time.perf_counter() - started)
        return done

    @abstractmethod
    async def write(
        self, conn: psycopg.AsyncConnection[tuple[Any, ...]], records: Sequence[SinkRecord[R]]
    ) -> None:
        """Write one partition's batch with idempotent statements (inside a transaction)."""
