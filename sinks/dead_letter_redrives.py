"""The ``dead_letter_redrives`` table: which dead letters were redriven, and when.

``leadflow dlq redrive`` records a dead letter here only after Kafka has
acknowledged its republished record, so a run that stops half way leaves
the rest unrecorded and a second run picks them up. A row counts only when
its original coordinates and ``failed_at`` match the dead letter at that
position, so rows left over from a deleted and re-created dead-letter topic
never hide new dead letters. Redriving also stamps ``dead_letters.redriven_at``
for the copy of the dead letter the sink keeps in Postgres, when there is one.

A run holds a Postgres advisory lock per dead-letter topic for its whole
length, so two operators cannot redrive the same records at the same time.
All SQL is parameterised.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from streams.dead_letters import DeadLetter, DeadLetterId
from streams.errors import DatabaseError, DatabaseUnavailableError

__all__ = ["RedriveInProgressError", "RedriveRecord", "RedriveStore"]

#: First key of the two-key advisory lock (the second is a hash of the topic).
_LOCK_CLASS = 0x1EAD
_TRANSIENT = (psycopg.OperationalError, OSError)


class RedriveInProgressError(DatabaseError):
    """Another ``leadflow dlq redrive`` is running on the same dead-letter topic."""

    reason = "redrive_in_progress"


@dataclass(frozen=True)
class RedriveRecord:
    """What the table says about one dead letter."""

    id: DeadLetterId
    redrive_count: int
    first_redriven_at: datetime
    redriven_at: datetime


def _matches(row: Sequence[Any], dead: DeadLetter) -> bool:
    topic, partition, offset, failed_at = row
    return bool(
        topic == dead.original_topic
        and int(partition) == int(dead.record["original_partition"])
        and int(offset) == int(dead.record["original_offset"])
        and abs((failed_at - dead.failed_at).total_seconds()) < 0.001
    )


class RedriveStore:
    """Reads and writes ``dead_letter_redrives`` for one dead-letter topic."""

    def __init__(self, dsn: str, dlq_topic: str) -> None:
        self.dsn = dsn
        self.dlq_topic = dlq_topic

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        try:
            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                yield conn
        except psycopg.errors.UndefinedTable as exc:
            raise DatabaseError(
                "table dead_letter_redrives is missing; run `leadflow db migrate`"
            ) from exc
        except _TRANSIENT as exc:
            raise DatabaseUnavailableError(f"Postgres unavailable: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise DatabaseError(f"dead_letter_redrives: {_first_line(exc)}") from exc

    def lookup(self, dead_letters: Iterable[DeadLetter]) -> dict[DeadLetterId, RedriveRecord]:
        """The redrive records of those of ``dead_letters`` that were redriven."""
        by_id = {d.id: d for d in dead_letters}
        if not by_id:
            return {}
        partitions = [i.partition for i in by_id]
        offsets = [i.offset for i in by_id]
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT r.dlq_partition, r.dlq_offset, r.original_topic, r.original_partition, "
                "r.original_offset, r.failed_at, r.redrive_count, r.first_redriven_at, "
                "r.redriven_at "
                "FROM dead_letter_redrives r "
                "JOIN unnest(%b::integer[], %b::bigint[]) AS w(p, o) "
                "ON r.dlq_partition = w.p AND r.dlq_offset = w.o "
                "WHERE r.dlq_topic = %s",
                (partitions, offsets, self.dlq_topic),
            ).fetchall()
        out: dict[DeadLetterId, RedriveRecord] = {}
        for p, o, topic, opart, ooff, failed_at, count, first, last in rows:
            ident = DeadLetterId(int(p), int(o))
            if _matches((topic, opart, ooff, failed_at), by_id[ident]):
                out[ident] = RedriveRecord(ident, int(count), first, last)
        return out

    def record(self, dead_letters: Sequence[DeadLetter]) -> None:
        """Note ``dead_letters`` as redriven now (a second redrive counts up)."""
        if not dead_letters:
            return
        rows = [
            (
                self.dlq_topic,
                d.id.partition,
                d.id.offset,
                d.original_topic,
                int(d.record["original_partition"]),
                int(d.record["original_offset"]),
                d.stage,
                d.reason,
                d.attempt + 1,
                d.campaign_id,
                d.lead_id,
                d.failed_at,
            )
            for d in dead_letters
        ]
        with self._connect() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                """
                    INSERT INTO dead_letter_redrives AS r (
                        dlq_topic, dlq_partition, dlq_offset, original_topic,
                        original_partition, original_offset, stage, reason, attempt,
                        campaign_id, lead_id, failed_at)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO UPDATE SET
                        redrive_count = CASE
                            WHEN r.original_topic = EXCLUDED.original_topic
                             AND r.original_partition = EXCLUDED.original_partition
                             AND r.original_offset = EXCLUDED.original_offset
                             AND r.failed_at = EXCLUDED.failed_at
                            THEN r.redrive_count + 1 ELSE 1 END,
                        first_redriven_at = CASE
                            WHEN r.original_topic = EXCLUDED.original_topic
                             AND r.original_partition = EXCLUDED.original_partition
                             AND r.original_offset = EXCLUDED.original_offset
                             AND r.failed_at = EXCLUDED.failed_at
                            THEN r.first_redriven_at ELSE now() END,
                        original_topic = EXCLUDED.original_topic,
                        original_partition = EXCLUDED.original_partition,
                        original_offset = EXCLUDED.original_offset,
                        stage = EXCLUDED.stage,
                        reason = EXCLUDED.reason,
                        attempt = EXCLUDED.attempt,
                        campaign_id = EXCLUDED.campaign_id,
                        lead_id = EXCLUDED.lead_id,
                        failed_at = EXCLUDED.failed_at,
                        redriven_at = now()
                    """,
                rows,
            )
            cur.executemany(
                "UPDATE dead_letters SET redriven_at = now() "
                "WHERE original_topic = %s AND original_partition = %s "
                "AND original_offset = %s AND attempt = %s",
                [
                    (
                        d.original_topic,
                        int(d.record["original_partition"]),
                        int(d.record["original_offset"]),
                        d.attempt,
                    )
                    for d in dead_letters
                ],
            )

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the redrive lock of this dead-letter topic, or raise if another run has it.

        The lock is a session advisory lock: it ends with the connection, so a
        run that dies never leaves it behind.
        """
        key = zlib.crc32(self.dlq_topic.encode()) - 2**31  # into int4 range
        try:
            conn = psycopg.connect(self.dsn, connect_timeout=5, autocommit=True)
        except _TRANSIENT as exc:
            raise DatabaseUnavailableError(f"Postgres unavailable: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            raise DatabaseError(f"redrive lock: {_first_line(exc)}") from exc
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (_LOCK_CLASS, key)).fetchone()
        except _TRANSIENT as exc:
            conn.close()
            raise DatabaseUnavailableError(f"Postgres unavailable: {_first_line(exc)}") from exc
        except psycopg.Error as exc:
            conn.close()
            raise DatabaseError(f"redrive lock: {_first_line(exc)}") from exc
        try:
            if not row or not row[0]:
                raise RedriveInProgressError(
                    f"another `leadflow dlq redrive` is running on {self.dlq_topic}; "
                    "wait for it to finish"
                )
            yield
        finally:
            with contextlib.suppress(Exception):  # closing the session releases the lock
                conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
