"""The campaign clock: wall time, optionally running faster.

``LEADFLOW_TIME_SCALE`` (default 1) makes campaign time run that many times
faster than wall time, so a week-long sequence can run in a minute. Send
windows, due times and the ``X-Leadflow-Clock`` header all use campaign time.

Every process must agree on campaign time, across restarts, so the anchor
(a wall instant and the campaign instant it maps to) is stored once in
Postgres (``clock_anchor``) and read by everyone. Changing the scale
re-anchors at the current campaign time, so the clock never jumps back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from streams.errors import ConfigError, DatabaseError

__all__ = ["CampaignClock", "shared_clock"]


@dataclass(frozen=True)
class CampaignClock:
    """Maps wall time to campaign time: ``campaign = anchor + (wall - wall_anchor) * scale``."""

    scale: float
    wall_anchor: float  # unix seconds
    campaign_anchor: float  # unix seconds
    wall: Callable[[], float] = time.time

    @classmethod
    def realtime(cls) -> CampaignClock:
        """Campaign time equals wall time."""
        return cls(1.0, 0.0, 0.0)

    def now_s(self) -> float:
        """Campaign time now, in unix seconds."""
        return self.campaign_anchor + (self.wall() - self.wall_anchor) * self.scale

    def now_ms(self) -> int:
        """Campaign time now, in unix milliseconds."""
        return int(self.now_s() * 1000)

    def now(self) -> datetime:
        """Campaign time now, as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now_s(), UTC)

    def wall_seconds_until(self, campaign_at: datetime) -> float:
        """Wall seconds until campaign time reaches ``campaign_at`` (0 if past)."""
        return max(0.0, (campaign_at.timestamp() - self.now_s()) / self.scale)

    def campaign_span(self, wall_seconds: float) -> timedelta:
        """How much campaign time passes in ``wall_seconds`` of wall time."""
        return timedelta(seconds=wall_seconds * self.scale)


def _parse_start(text: str) -> float | None:
    if not text:
        return None
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"LEADFLOW_CLOCK_START={text!r} is not an ISO 8601 time") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return start.timestamp()


def shared_clock(dsn: str, scale: float, start: str = "") -> CampaignClock:
    """The clock every process shares, anchored once in Postgres."""
    try:
        with psycopg.connect(dsn) as conn, conn.transaction():
            conn.execute("LOCK TABLE clock_anchor IN EXCLUSIVE MODE")
            wall_now = time.time()  # after the lock: the anchor is taken at this instant
            row = conn.execute(
                "SELECT extract(epoch FROM wall_anchor), extract(epoch FROM campaign_anchor), "
                "scale FROM clock_anchor WHERE id = 1"
            ).fetchone()
            if row is not None:
                clock = CampaignClock(float(row[2]), float(row[0]), float(row[1]))
                if abs(clock.scale - scale) < 1e-9:
                    return clock
                # re-anchor at this instant: campaign time stays continuous
                campaign_now = clock.campaign_anchor + (wall_now - clock.wall_anchor) * clock.scale
            else:
                parsed = _parse_start(start)
                campaign_now = parsed if parsed is not None else wall_now
            conn.execute(
                "INSERT INTO clock_anchor (id, wall_anchor, campaign_anchor, scale) "
                "VALUES (1, to_timestamp(%s), to_timestamp(%s), %s) "
                "ON CONFLICT (id) DO UPDATE SET wall_anchor = EXCLUDED.wall_anchor, "
                "campaign_anchor = EXCLUDED.campaign_anchor, scale = EXCLUDED.scale",
                (wall_now, campaign_now, scale),
            )
            return CampaignClock(scale, wall_now, campaign_now)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot read the campaign clock anchor: {exc}".strip()) from exc
