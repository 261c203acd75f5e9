"""When a touch may go out: the campaign's send window in the lead's local time."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from streams.campaign import Campaign
from streams.timezones import DEFAULT_TIMEZONE, valid_timezone

__all__ = ["in_window", "next_send_time"]


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(valid_timezone(name) or DEFAULT_TIMEZONE)


def next_send_time(campaign: Campaign, timezone: str, state: str | None, at: datetime) -> datetime:
    """``at`` when the lead's window is open then, else the window's next opening (UTC)."""
    local = at.astimezone(_zone(timezone))
    return campaign.window_for(state).next_opening(local).astimezone(UTC)


def in_window(campaign: Campaign, timezone: str, state: str | None, at: datetime) -> bool:
    """True when ``at`` is inside the lead's send window."""
    return campaign.window_for(state).allows(at.astimezone(_zone(timezone)))
