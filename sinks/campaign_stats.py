"""Campaign statistics in Postgres (``campaign_stats``), refreshed from the ``sent`` topic.

Each batch of ``sent`` records names the campaigns that moved; their figures
are recomputed from the send ledger and the leads table and upserted. A
recomputation is idempotent by construction, so replays and redelivery
change nothing. Figures (``metric`` column):

- ``sends.<status>`` and ``sends.<status>.<channel>``: send-ledger rows by status
  (accepted, failed, ambiguous, skipped, claimed);
- ``cost_units``: the sum of the ledger's cost units;
- ``leads.total``, ``leads.terminal``: leads known, and those in a terminal state;
- ``completion_rate``: ``leads.terminal / leads.total`` (0 when there are none).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg

from sinks.contract import Sink, SinkRecord
from streams import metrics
from streams.state_machine import TERMINAL

__all__ = ["CampaignStatsSink", "refresh_campaign_stats"]

_REFRESH = """
WITH sends AS (
    SELECT campaign_id, 'sends.' || status AS metric, count(*)::float8 AS value
      FROM send_ledger WHERE campaign_id = ANY(%(ids)s) GROUP BY campaign_id, status
    UNION ALL
    SELECT campaign_id, 'sends.' || status || '.' || channel, count(*)::float8
      FROM send_ledger WHERE campaign_id = ANY(%(ids)s) GROUP BY campaign_id, status, channel
    UNION ALL
    SELECT campaign_id, 'cost_units', coalesce(sum(cost_units), 0)::float8
      FROM send_ledger WHERE campaign_id = ANY(%(ids)s) GROUP BY campaign_id
),
leads_by AS (
    SELECT campaign_id, count(*)::float8 AS total,
           count(*) FILTER (WHERE state = ANY(%(terminal)s))::float8 AS terminal
      FROM leads WHERE campaign_id = ANY(%(ids)s) GROUP BY campaign_id
),
figures AS (
    SELECT * FROM sends
    UNION ALL SELECT campaign_id, 'leads.total', total FROM leads_by
    UNION ALL SELECT campaign_id, 'leads.terminal', terminal FROM leads_by
    UNION ALL SELECT campaign_id, 'completion_rate',
                     CASE WHEN total > 0 THEN terminal / total ELSE 0 END FROM leads_by
)
INSERT INTO campaign_stats (campaign_id, metric, value, updated_at)
SELECT campaign_id, metric, value, now() FROM figures
ON CONFLICT (campaign_id, metric) DO UPDATE SET value = EXCLUDED.value, updated_at = now()
"""


async def refresh_campaign_stats(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], campaign_ids: Sequence[str]
) -> None:
    """Recompute every figure of ``campaign_ids`` from the ledger and the leads table."""
    if campaign_ids:
        await conn.execute(
            _REFRESH,
            {"ids": sorted(set(campaign_ids)), "terminal": sorted(s.value for s in TERMINAL)},
        )


class CampaignStatsSink(Sink[dict[str, Any]]):
    """Decoded ``leadflow.TouchSent`` records -> refreshed ``campaign_stats`` rows."""

    name: ClassVar[str] = "campaign_stats"

    async def flush(self) -> dict[tuple[str, int], int]:
        """Refresh each campaign of the pending records once, in one transaction."""
        if not self._batches:
            return {}
        records = [r for batch in self._batches.values() for r in batch]
        started = time.perf_counter()
        with metrics.sink_flush(self.name, len(records)):
            async with self.db.transaction() as conn:
                await self.write(conn, records)
        if self.on_flush is not None:
            self.on_flush(self.name, time.perf_counter() - started)
        done = {tp: max(r.offset for r in batch) for tp, batch in self._batches.items()}
        self.discard()
        return done

    async def write(
        self,
        conn: psycopg.AsyncConnection[tuple[Any, ...]],
        records: Sequence[SinkRecord[dict[str, Any]]],
    ) -> None:
        """Refresh the campaigns named by ``records``."""
        await refresh_campaign_stats(conn, [str(r.value["campaign_id"]) for r in records])
