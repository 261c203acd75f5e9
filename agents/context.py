"""Everything the stages share in one worker process, built once on first use."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from agents.campaign_cache import CampaignCache
from agents.lead_states import LeadStates
from providers.factory import Providers, build_providers
from sinks.db import StageDatabase
from streams.clock import CampaignClock, shared_clock
from streams.settings import Settings, get_settings
from streams.topics import by_name

__all__ = ["PipelineContext", "close_context", "get_context"]

log = logging.getLogger(__name__)


@dataclass
class PipelineContext:
    """Settings, clock, campaigns, providers and the state table of this worker."""

    settings: Settings
    clock: CampaignClock
    campaigns: CampaignCache
    providers: Providers
    states: LeadStates
    producer: Any
    _dbs: dict[str, StageDatabase] = field(default_factory=dict)

    def topic(self, base: str) -> str:
        """Full name of catalog topic ``base``."""
        return by_name(base).full_name(self.settings)

    def db(self, stage: str) -> StageDatabase:
        """The Postgres connection of ``stage`` (one per stage)."""
        if stage not in self._dbs:
            self._dbs[stage] = StageDatabase(self.settings.worker_dsn, stage)
        return self._dbs[stage]

    async def aclose(self) -> None:
        """Close connections and provider sessions."""
        for db in self._dbs.values():
            await db.aclose()
        if self.campaigns is not None:
            await self.campaigns.db.aclose()
        await self.providers.aclose()


_context: PipelineContext | None = None
_lock = asyncio.Lock()


async def close_context(*_: Any, **__: Any) -> None:
    """Close the worker's context (connections, provider sessions) at shutdown."""
    global _context
    if _context is not None:
        context, _context = _context, None
        await context.aclose()


async def get_context(app: Any, table: Any) -> PipelineContext:
    """The worker's context, built on first call (validates provider config)."""
    global _context
    async with _lock:
        if _context is None:
            settings = get_settings()
            clock = await asyncio.to_thread(
                shared_clock, settings.worker_dsn, settings.time_scale, settings.clock_start
            )
            providers = build_providers()
            _context = PipelineContext(
                settings=settings,
                clock=clock,
                campaigns=CampaignCache(StageDatabase(settings.worker_dsn, "campaigns")),
                providers=providers,
                states=LeadStates(table),
                producer=app.producer,
            )
            log.info("pipeline context ready (time scale %.0f)", settings.time_scale)
        return _context
