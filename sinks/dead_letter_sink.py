"""Dead letters into Postgres, so they can be queried (``dead_letters`` table).

Fed from the ``dead-letter`` topic by :mod:`agents.sink_agents`. The natural
key is the failed record's position and attempt, so a dead letter delivered
twice is stored once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg

from sinks.contract import Sink, SinkRecord

__all__ = ["DeadLetterSink"]

_INSERT = """
INSERT INTO dead_letters (original_topic, original_partition, original_offset, original_key,
                          stage, reason, error_class, error_message, attempt, campaign_id,
                          lead_id, payload, failed_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (original_topic, original_partition, original_offset, attempt) DO NOTHING
"""


class DeadLetterSink(Sink[dict[str, Any]]):
    """Decoded ``leadflow.DeadLetter`` records -> ``dead_letters`` rows."""

    name: ClassVar[str] = "dead_letters"

    async def write(
        self,
        conn: psycopg.AsyncConnection[tuple[Any, ...]],
        records: Sequence[SinkRecord[dict[str, Any]]],
    ) -> None:
        """Insert the batch; rows already there are left as they are."""
        async with conn.cursor() as cur:
            await cur.executemany(
                _INSERT,
                [
                    (
                        d["original_topic"],
                        d["original_partition"],
                        d["original_offset"],
                        d.get("original_key"),
                        d["stage"],
                        d["reason"],
                        d["error_class"],
                        d["error_message"],
                        d["attempt"],
                        d.get("campaign_id"),
                        d.get("lead_id"),
                        d["payload"],
                        d["failed_at"],
                    )
                    for d in (r.value for r in records)
                ],
            )
