"""``GET /metrics`` on the worker's web server, and the polls behind its slow figures.

The view renders :data:`streams.metrics.REGISTRY` in the Prometheus text
format. Most families are updated where things happen (stage runner,
provider guard, sinks); three groups cost a round trip and are polled in the
background instead, so a scrape never waits on Kafka or Postgres:

* **consumer lag** per stage, topic and partition
  (:func:`streams.lag.stage_lag`, a blocking confluent-kafka call run in a
  thread), every ``LEADFLOW_METRICS_INTERVAL`` seconds (default 5);
* **pending touches** by channel and due bucket, and **per-campaign** leads by
  state, completion ratio, sends and cost units, from Postgres every
  ``LEADFLOW_METRICS_DB_INTERVAL`` seconds (default 15).

Due buckets are in campaign-clock time: the queue's ``due_at`` is campaign
time, and "now" is the shared clock (``clock_anchor``) computed in the same
query. With ``LEADFLOW_TIME_SCALE=12000`` a campaign hour passes in 0.3 s of
wall time, so most touches read ``overdue`` or ``later`` there; at scale 1 the
buckets are wall time too.

Every worker polls the same group lag and the same tables, so with several
workers aggregate with ``max by (...)``, not ``sum``. A failed poll keeps the
previous snapshot and counts ``leadflow_metrics_poll_errors_total``;
``leadflow_metrics_poll_timestamp_seconds`` tells how fresh each group is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import faust
import psycopg

from sinks.db import StageDatabase
from streams import metrics
from streams.app import app
from streams.lag import STAGE_INPUT_TOPICS, stage_lag
from streams.settings import Settings, get_settings, load_from_env
from streams.state_machine import TERMINAL

__all__ = [
    "MetricsView",
    "campaign_figures",
    "pending_touch_counts",
    "poll_lag",
    "poll_postgres",
]

log = logging.getLogger(__name__)

#: The campaign clock's "now", from the shared anchor (wall time when none yet).
_CAMPAIGN_NOW = """
    SELECT coalesce(
        (SELECT campaign_anchor + (clock_timestamp() - wall_anchor) * scale
         FROM clock_anchor WHERE id = 1),
        clock_timestamp()) AS t
"""

#: Unreleased touches per channel (``all``), and those due within a day by bucket.
#: One statement, so one snapshot: ``later`` is ``all`` minus the near buckets.
#: The totals are an index-only scan of ``pending_touches_channel_due_idx``
#: (migration 0007) and the near buckets a range scan per channel on it, so a
#: million touches due next month cost a fifth of reading the queue table.
_PENDING = f"""
    WITH now_c AS MATERIALIZED ({_CAMPAIGN_NOW}),
    totals AS MATERIALIZED (
        SELECT channel, count(*) AS n FROM pending_touches
        WHERE emitted_at IS NULL GROUP BY channel)
    SELECT channel, 'all', n FROM totals
    UNION ALL
    SELECT p.channel,
           CASE WHEN p.due_at <= n.t THEN 'overdue'
                WHEN p.due_at <= n.t + interval '1 minute' THEN 'next_1m'
                WHEN p.due_at <= n.t + interval '1 hour' THEN 'next_1h'
                ELSE 'next_1d' END,
           count(*)
    FROM totals c CROSS JOIN now_c n
    JOIN pending_touches p ON p.channel = c.channel AND p.emitted_at IS NULL
                          AND p.due_at <= n.t + interval '1 day'
    GROUP BY 1, 2
"""

#: Background polls run serially and uncompiled: a parallel scan or JIT costs a
#: small machine more CPU than the count itself.
_POLL_SETTINGS = ("SET LOCAL max_parallel_workers_per_gather = 0", "SET LOCAL jit = off")

_CAMPAIGNS = """
    SELECT campaign_id FROM campaigns WHERE status IN ('active', 'paused')
    ORDER BY created_at DESC, campaign_id LIMIT %s
"""

_LEADS = f"""
    WITH c AS ({_CAMPAIGNS})
    SELECT l.campaign_id, l.state, count(*)
    FROM leads l JOIN c ON c.campaign_id = l.campaign_id
    GROUP BY 1, 2
"""

_SENDS = f"""
    WITH c AS ({_CAMPAIGNS})
    SELECT s.campaign_id, s.channel, s.status, count(*), coalesce(sum(s.cost_units), 0)
    FROM send_ledger s JOIN c ON c.campaign_id = s.campaign_id
    GROUP BY 1, 2, 3
"""

_CHANNELS = ("sms", "voice", "email")
_NEAR_BUCKETS = tuple(b for b in metrics.PENDING_TOUCH_BUCKETS if b != "later")
_TERMINAL = frozenset(state.value for state in TERMINAL)

Conn = psycopg.AsyncConnection[tuple[object, ...]]


def _int(value: object) -> int:
    return int(str(value))


async def pending_touch_counts(conn: Conn) -> dict[tuple[str, ...], float]:
    """Unreleased touches by (channel, due bucket); every bucket of every channel present."""
    cur = await conn.execute(_PENDING)
    counts: dict[tuple[str, ...], float] = {
        (channel, due): 0 for channel in _CHANNELS for due in metrics.PENDING_TOUCH_BUCKETS
    }
    totals: dict[str, int] = {}
    for channel, due, n in await cur.fetchall():
        if due == "all":
            totals[str(channel)] = _int(n)
        else:
            counts[(str(channel), str(due))] = _int(n)
    for channel, total in totals.items():
        near = sum(counts.get((channel, due), 0) for due in _NEAR_BUCKETS)
        counts[(channel, "later")] = total - near
    return counts


async def campaign_figures(
    conn: Conn, max_campaigns: int
) -> dict[str, dict[tuple[str, ...], float]]:
    """Per-campaign snapshots: ``leads``, ``completion``, ``sends`` and ``cost`` rows."""
    leads: dict[tuple[str, ...], float] = {}
    totals: dict[str, int] = defaultdict(int)
    ended: dict[str, int] = defaultdict(int)
    for campaign, state, n in await (await conn.execute(_LEADS, (max_campaigns,))).fetchall():
        c, s, count = str(campaign), str(state), _int(n)
        leads[(c, s)] = count
        totals[c] += count
        if s in _TERMINAL:
            ended[c] += count
    completion: dict[tuple[str, ...], float] = {
        (c,): ended[c] / total for c, total in totals.items() if total
    }
    sends: dict[tuple[str, ...], float] = {}
    cost: dict[tuple[str, ...], float] = defaultdict(float)
    rows = await (await conn.execute(_SENDS, (max_campaigns,))).fetchall()
    for campaign, channel, status, n, units in rows:
        sends[(str(campaign), str(channel), str(status))] = _int(n)
        cost[(str(campaign), str(channel))] += float(str(units))
    return {"leads": leads, "completion": completion, "sends": sends, "cost": dict(cost)}


async def poll_postgres(db: StageDatabase, max_campaigns: int) -> None:
    """Refresh the pending-touch and per-campaign snapshots from Postgres."""
    async with db.transaction() as conn:
        for statement in _POLL_SETTINGS:
            await conn.execute(statement)
        pending = await pending_touch_counts(conn)
        figures = await campaign_figures(conn, max_campaigns)
    metrics.PENDING_TOUCHES.replace(pending)
    metrics.CAMPAIGN_LEADS.replace(figures["leads"])
    metrics.CAMPAIGN_COMPLETION.replace(figures["completion"])
    metrics.CAMPAIGN_SENDS.replace(figures["sends"])
    metrics.CAMPAIGN_COST_UNITS.replace(figures["cost"])
    metrics.poll_succeeded("postgres")


async def poll_lag(settings: Settings, timeout_s: float = 5.0) -> None:
    """Refresh ``leadflow_consumer_lag_records`` from the broker (in a thread)."""
    lag = await asyncio.to_thread(stage_lag, settings, timeout_s)
    rows: dict[tuple[str, ...], float] = {}
    for stage, partitions in lag.items():
        topic = STAGE_INPUT_TOPICS[stage]
        for p in partitions:
            rows[(stage, topic, str(p.partition))] = p.lag
    metrics.CONSUMER_LAG.replace(rows)
    metrics.poll_succeeded("lag")


@app.page("/metrics")
class MetricsView(faust.web.View):
    """``GET /metrics``: the Prometheus text exposition of leadflow's registry."""

    async def get(self, request: Any) -> Any:
        """Render every family (polled ones from their last snapshot)."""
        body, content_type = metrics.render()
        return self.bytes(body, headers={"Content-Type": content_type})


# --- background polls -------------------------------------------------------------------

_config = load_from_env(metrics.MetricsSettings)
_db: StageDatabase | None = None


async def _guarded(poller: str, poll: Any) -> None:
    started = time.monotonic()
    try:
        await poll
    except Exception as exc:  # a poll must never take the worker down
        metrics.poll_failed(poller, exc)
        log.warning("metrics: %s poll failed (%s)", poller, metrics.label_reason(exc))
    else:
        log.debug("metrics: %s poll took %.3f s", poller, time.monotonic() - started)


async def _refresh_lag() -> None:
    """Poll consumer lag (a Faust timer)."""
    await _guarded("lag", poll_lag(get_settings()))


async def _refresh_postgres() -> None:
    """Poll pending touches and campaign figures (a Faust timer)."""
    global _db
    if _db is None:
        _db = StageDatabase(get_settings().dsn, "metrics")
    await _guarded("postgres", poll_postgres(_db, _config.metrics_max_campaigns))


_TIMERS: Mapping[str, tuple[float, Any]] = {
    "metrics-lag": (_config.metrics_interval_s, _refresh_lag),
    "metrics-postgres": (_config.metrics_db_interval_s, _refresh_postgres),
}
for _name, (_interval, _fun) in _TIMERS.items():
    if _interval > 0:
        app.timer(interval=_interval, name=_name)(_fun)


@app.on_before_shutdown.connect
async def _close_metrics_db(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    """Close the metrics poll's Postgres connection when the worker stops."""
    global _db
    if _db is not None:
        db, _db = _db, None
        await db.aclose()
