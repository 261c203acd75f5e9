"""Campaign definitions and statuses for the stages, cached for a moment.

A pause or cancel in Postgres is seen by every stage within ``ttl_s``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sinks.db import StageDatabase
from streams.campaign import Campaign

__all__ = ["CampaignCache", "CampaignView"]


class CampaignView:
    """A campaign and its current status."""

    __slots__ = ("campaign", "status")

    def __init__(self, campaign: Campaign, status: str) -> None:
        self.campaign = campaign
        self.status = status

    @property
    def active(self) -> bool:
        """True while touches may go out."""
        return self.status == "active"


class CampaignCache:
    """Loads campaigns by id from Postgres, refreshing each after ``ttl_s``."""

    def __init__(self, db: StageDatabase, ttl_s: float = 1.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, CampaignView | None]] = {}

    async def get_many(self, ids: Iterable[str | None]) -> dict[str, CampaignView]:
        """The known campaigns among ``ids`` (unknown ids are absent)."""
        now = time.monotonic()
        wanted = {i for i in ids if i}
        stale = [i for i in wanted if i not in self._cache or now - self._cache[i][0] > self.ttl_s]
        if stale:
            async with self.db.transaction() as conn:
                cur = await conn.execute(
                    "SELECT campaign_id, config, status FROM campaigns WHERE campaign_id = ANY(%s)",
                    (stale,),
                )
                rows = await cur.fetchall()
            found = {
                str(cid): CampaignView(Campaign.from_dict(config), str(status))  # type: ignore[arg-type]
                for cid, config, status in rows
            }
            for cid in stale:
                self._cache[cid] = (now, found.get(cid))
        out: dict[str, CampaignView] = {}
        for cid in wanted:
            view = self._cache[cid][1]
            if view is not None:
                out[cid] = view
        return out
