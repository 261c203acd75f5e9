"""The scheduler's durable queue of touches (``pending_touches``).

A touch is queued once per (campaign, lead, touch); queueing again is a
no-op, so replays and redeliveries are harmless. Releasing takes the due
rows of the caller's partitions, best priority first, locks them
(``SKIP LOCKED``, so two workers never release the same row), and marks them
emitted in the same transaction after the caller has produced them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import psycopg

__all__ = [
    "DueTouch",
    "PendingTouch",
    "earlier_payloads",
    "mark_emitted",
    "next_due",
    "queue_touches",
    "release_due",
    "requeue",
    "requeue_unhandled_releases",
    "stalled_sequences",
]


@dataclass(frozen=True)
class PendingTouch:
    """A touch to queue."""

    campaign_id: str
    lead_id: str
    touch: int
    kafka_partition: int
    channel: str
    priority: int
    due_at: datetime
    payload: bytes


@dataclass(frozen=True)
class DueTouch:
    """A released touch: its key and encoded ``TouchDue``."""

    campaign_id: str
    lead_id: str
    touch: int
    payload: bytes


async def queue_touches(
    conn: psycopg.AsyncConnection[tuple[object, ...]], touches: Sequence[PendingTouch]
) -> None:
    """Queue touches that are not queued yet."""
    if not touches:
        return
    await conn.execute(
        """
        INSERT INTO pending_touches (campaign_id, lead_id, touch, kafka_partition, channel,
                                     priority, due_at, payload)
        SELECT * FROM unnest(%b::text[], %b::text[], %b::int[], %b::int[], %b::text[],
                             %b::int[], %b::timestamptz[], %b::bytea[])
        ON CONFLICT (campaign_id, lead_id, touch) DO NOTHING
        """,
        (
            [t.campaign_id for t in touches],
            [t.lead_id for t in touches],
            [t.touch for t in touches],
            [t.kafka_partition for t in touches],
            [t.channel for t in touches],
            [t.priority for t in touches],
            [t.due_at for t in touches],
            [t.payload for t in touches],
        ),
    )


async def earlier_payloads(
    conn: psycopg.AsyncConnection[tuple[object, ...]], keys: Sequence[tuple[str, str, int]]
) -> dict[tuple[str, str, int], bytes]:
    """The queued payloads of (campaign, lead, touch) keys that exist."""
    if not keys:
        return {}
    cur = await conn.execute(
        """
        SELECT p.campaign_id, p.lead_id, p.touch, p.payload
        FROM pending_touches p
        JOIN unnest(%b::text[], %b::text[], %b::int[]) AS k(campaign_id, lead_id, touch)
          ON p.campaign_id = k.campaign_id AND p.lead_id = k.lead_id AND p.touch = k.touch
        """,
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
    )
    return {(str(c), str(lead), int(str(t))): bytes(p) for c, lead, t, p in await cur.fetchall()}  # type: ignore[call-overload]


async def release_due(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    *,
    partitions: Sequence[int],
    channel: str,
    now: datetime,
    limit: int,
    exclude: Sequence[str] = (),
) -> list[DueTouch]:
    """Lock and return up to ``limit`` due touches of ``channel`` on ``partitions``.

    Call inside a transaction, produce the payloads, then :func:`mark_emitted`
    in the same transaction. Paused campaigns release nothing; cancelled ones
    do, so the send stage can close their leads. Campaigns in ``exclude``
    (those at their daily cap) are skipped.
    """
    if not partitions or limit <= 0:
        return []
    cur = await conn.execute(
        """
        SELECT p.campaign_id, p.lead_id, p.touch, p.payload
        FROM pending_touches p
        JOIN campaigns c ON c.campaign_id = p.campaign_id
        WHERE p.kafka_partition = ANY(%s) AND p.emitted_at IS NULL AND p.due_at <= %s
          AND p.channel = %s AND c.status IN ('active', 'cancelled')
          AND p.campaign_id <> ALL(%s)
        ORDER BY p.priority DESC, p.due_at
        LIMIT %s
        FOR UPDATE OF p SKIP LOCKED
        """,
        (list(partitions), now, channel, list(exclude), limit),
    )
    rows = await cur.fetchall()
    return [DueTouch(str(c), str(lead), int(str(t)), bytes(p)) for c, lead, t, p in rows]  # type: ignore[call-overload]


async def next_due(
    conn: psycopg.AsyncConnection[tuple[object, ...]], *, partitions: Sequence[int]
) -> datetime | None:
    """The earliest due time of an unreleased touch on ``partitions`` (None: none queued).

    One index probe per partition (``(kafka_partition, due_at)`` over
    unreleased rows), however many touches are pending.
    """
    if not partitions:
        return None
    cur = await conn.execute(
        """
        SELECT min(d.due_at) FROM unnest(%b::int[]) AS k(part),
        LATERAL (SELECT due_at FROM pending_touches
                 WHERE kafka_partition = k.part AND emitted_at IS NULL
                 ORDER BY due_at LIMIT 1) d
        """,
        (list(partitions),),
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else cast(datetime, row[0])


async def mark_emitted(
    conn: psycopg.AsyncConnection[tuple[object, ...]], touches: Sequence[DueTouch], at: datetime
) -> None:
    """Mark released touches as emitted."""
    if not touches:
        return
    await conn.execute(
        """
        UPDATE pending_touches p SET emitted_at = %s
        FROM unnest(%b::text[], %b::text[], %b::int[]) AS k(campaign_id, lead_id, touch)
        WHERE p.campaign_id = k.campaign_id AND p.lead_id = k.lead_id AND p.touch = k.touch
        """,
        (
            at,
            [t.campaign_id for t in touches],
            [t.lead_id for t in touches],
            [t.touch for t in touches],
        ),
    )


async def requeue(
    conn: psycopg.AsyncConnection[tuple[object, ...]], key: tuple[str, str, int], due_at: datetime
) -> None:
    """Put a released touch back in the queue, due at ``due_at``."""
    await conn.execute(
        "UPDATE pending_touches SET emitted_at = NULL, due_at = %s "
        "WHERE campaign_id = %s AND lead_id = %s AND touch = %s",
        (due_at, *key),
    )


async def requeue_unhandled_releases(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    *,
    settled_before: Mapping[int, datetime],
    limit: int = 500,
) -> int:
    """Put back in the queue released touches no send stage handled; return how many.

    A touch counts when its lead is still ``in_sequence`` at it, it was
    released (``emitted_at``) before its partition's ``settled_before``
    instant, and the send ledger has no row for it: its ``touch-due`` event
    was lost. Clearing ``emitted_at`` makes the releaser emit it again.
    """
    if not settled_before:
        return 0
    partitions = sorted(settled_before)
    cur = await conn.execute(
        """
        UPDATE pending_touches p SET emitted_at = NULL
        FROM (
            SELECT p2.campaign_id, p2.lead_id, p2.touch
            FROM leads l
            JOIN pending_touches p2
              ON p2.campaign_id = l.campaign_id AND p2.lead_id = l.lead_id
             AND p2.touch = l.touch
            JOIN unnest(%b::int[], %b::timestamptz[]) AS b(part, settled_before)
              ON b.part = p2.kafka_partition
            WHERE l.state = 'in_sequence' AND l.touch >= 1
              AND p2.emitted_at IS NOT NULL AND p2.emitted_at < b.settled_before
              AND NOT EXISTS (
                  SELECT 1 FROM send_ledger s
                  WHERE s.campaign_id = p2.campaign_id AND s.lead_id = p2.lead_id
                    AND s.touch = p2.touch)
            LIMIT %s
        ) lost
        WHERE p.campaign_id = lost.campaign_id AND p.lead_id = lost.lead_id
          AND p.touch = lost.touch
        """,
        (partitions, [settled_before[p] for p in partitions], limit),
    )
    return cur.rowcount


@dataclass(frozen=True)
class SettledTouch:
    """A touch whose outcome is in the ledger while its lead never moved on."""

    kafka_partition: int
    record: dict[str, object]


async def stalled_sequences(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    *,
    settled_before: Mapping[int, datetime],
    limit: int = 500,
) -> list[SettledTouch]:
    """Leads still ``in_sequence`` at touch k whose touch k has a final outcome
    (accepted, failed or skipped) and no touch k + 1 queued: the ``sent`` event
    that should have moved them on was lost.

    ``settled_before`` maps each Kafka partition to sweep to the instant
    before which an outcome on it counts as settled (its ``sent`` event, if
    any, has been handled by then). Returns each lead as the
    ``leadflow.TouchSent`` record to publish again.
    """
    if not settled_before:
        return []
    partitions = sorted(settled_before)
    cur = await conn.execute(
        """
        SELECT p.kafka_partition, s.campaign_id, s.lead_id, s.touch, s.channel,
               coalesce(s.provider, ''), s.status, s.provider_message_id, s.idempotency_key,
               s.cost_units, coalesce(s.campaign_clock, s.completed_at), s.error, s.completed_at
        FROM leads l
        JOIN send_ledger s
          ON s.campaign_id = l.campaign_id AND s.lead_id = l.lead_id AND s.touch = l.touch
        JOIN pending_touches p
          ON p.campaign_id = l.campaign_id AND p.lead_id = l.lead_id AND p.touch = l.touch
        JOIN unnest(%b::int[], %b::timestamptz[]) AS b(part, settled_before)
          ON b.part = p.kafka_partition
        WHERE l.state = 'in_sequence' AND l.touch >= 1
          AND s.status IN ('accepted', 'failed', 'skipped')
          AND s.completed_at < b.settled_before
          AND NOT EXISTS (
              SELECT 1 FROM pending_touches n
              WHERE n.campaign_id = l.campaign_id AND n.lead_id = l.lead_id
                AND n.touch = l.touch + 1)
        LIMIT %s
        """,
        (partitions, [settled_before[p] for p in partitions], limit),
    )
    out = []
    for row in await cur.fetchall():
        (part, campaign, lead, touch, channel, provider, status, message_id, key, cost,
         sent_at, error, completed_at) = row  # fmt: skip
        out.append(
            SettledTouch(
                int(str(part)),
                {
                    "campaign_id": campaign,
                    "lead_id": lead,
                    "touch": touch,
                    "channel": channel,
                    "provider": provider,
                    "status": status,
                    "provider_message_id": message_id,
                    "idempotency_key": key,
                    "cost_units": float(str(cost)),
                    "sent_at": sent_at,
                    "error": error,
                    "event_time": completed_at,
                },
            )
        )
    return out
