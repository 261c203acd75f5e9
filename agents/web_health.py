"""``GET /health`` on the worker's web server: the report of ``leadflow health --json``.

The answer is the same JSON document (:meth:`streams.health.HealthReport.to_dict`)
with status **200** when healthy and **503** when not; ``?campaign=ID``
narrows it to one campaign (**404** for an unknown id). A report that cannot
be built at all (bad configuration) is a 503 with an ``error`` object.

What only this process knows is added here: the **circuit breakers** of its
providers (:class:`~agents.context.PipelineContext`), with how long each has
been away from ``closed`` (:class:`~streams.health.BreakerWatch` listens to
every state change), and a :class:`~streams.health.ProgressTracker` that
keeps the stage lag samples across requests. A timer samples lag every
``LEADFLOW_HEALTH_WORKER_SAMPLE_S`` (default 10 s) so that a stall is timed
even when nobody asks; ``leadflow health`` reads those stall times from here.

Kafka and Postgres are read in a thread (their clients block), breakers on
the event loop (they are not thread-safe).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust

from agents import topology
from agents.context import get_context
from providers.breaker import CircuitBreaker
from providers.settings import ProviderSettings
from sinks.campaigns import CampaignNotFoundError
from streams.app import app
from streams.errors import ConfigError, LeadflowError
from streams.health import (
    BreakerStatus,
    BreakerWatch,
    HealthReport,
    HealthSettings,
    ProgressTracker,
    collect,
    observe_lag,
    sample_stages,
)
from streams.settings import Settings, get_settings

__all__ = ["HealthView", "WorkerHealth", "default_monitor", "health_response"]

log = logging.getLogger(__name__)

#: Where the worker's breakers come from: channel -> breaker.
BreakerSource = Callable[[], Awaitable[Mapping[str, CircuitBreaker]]]


async def _context_breakers() -> dict[str, CircuitBreaker]:
    ctx = await get_context(app, topology.lead_state_table)
    return {channel: ctx.providers.breaker(channel) for channel in ctx.providers.guards}


class WorkerHealth:
    """Builds this worker's health report and keeps what must outlive one request."""

    def __init__(
        self,
        settings: Settings,
        health_settings: HealthSettings,
        providers: ProviderSettings,
        breakers: BreakerSource = _context_breakers,
    ) -> None:
        self.settings = settings
        self.health_settings = health_settings
        self.providers = providers
        self._breakers = breakers
        self.tracker = ProgressTracker()
        self.watch = BreakerWatch()

    async def breaker_statuses(self) -> dict[str, BreakerStatus]:
        """Every breaker's status now (``unknown`` while the pipeline context cannot be built)."""
        try:
            found = await self._breakers()
        except LeadflowError as exc:
            log.warning("health: breakers unknown (%s)", exc.reason)
            return {c: BreakerStatus.unknown(c) for c in self.providers.enabled_channels()}
        return {channel: self.watch.status(channel, b) for channel, b in found.items()}

    async def sample(self) -> None:
        """Take one lag sample for stall tracking (and start watching the breakers)."""
        await self.breaker_statuses()
        lag = await asyncio.to_thread(sample_stages, self.settings, self.health_settings.timeout_s)
        observe_lag(self.tracker, lag)

    async def report(self, campaign_id: str | None = None) -> HealthReport:
        """The full report (raises CampaignNotFoundError for an unknown campaign)."""
        breakers = await self.breaker_statuses()
        return await asyncio.to_thread(
            collect,
            self.settings,
            self.health_settings,
            providers=self.providers,
            campaign_id=campaign_id,
            source="worker",
            tracker=self.tracker,
            breakers=breakers,
        )


_monitor: WorkerHealth | None = None


def default_monitor() -> WorkerHealth:
    """The worker's monitor, built on first use from the environment (ConfigError if bad)."""
    global _monitor
    if _monitor is None:
        _monitor = WorkerHealth(
            get_settings(), HealthSettings.from_env(), ProviderSettings.from_env()
        )
    return _monitor


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "healthy": False,
        "status": "unhealthy",
        "error": {"code": code, "message": message},
    }


async def health_response(campaign_id: str | None = None) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, JSON body)`` of ``GET /health``."""
    try:
        report = await default_monitor().report(campaign_id)
    except CampaignNotFoundError as exc:
        return 404, {"error": {"code": exc.reason, "message": str(exc)}}
    except LeadflowError as exc:
        log.error("health: cannot build the report (%s)", exc.reason)
        return _error(503, exc.reason, str(exc))
    return report.http_status, report.to_dict()


@app.page("/health")
class HealthView(faust.web.View):
    """The Faust view: ``GET /health[?campaign=ID]``."""

    async def get(self, request: Any) -> Any:
        """Answer with :func:`health_response`."""
        campaign_id = request.query.get("campaign") or None
        status, body = await health_response(campaign_id)
        return self.json(body, status=status)


async def _sample_health() -> None:
    """Sample stage lag for stall tracking; a failed sample is logged, never raised."""
    try:
        await default_monitor().sample()
    except Exception as exc:  # a timer must survive a bad tick (broker blip, bad config)
        log.warning("health: lag sample failed (%s)", type(exc).__name__)


def _sample_interval() -> float:
    try:
        return HealthSettings.from_env().worker_sample_s
    except ConfigError as exc:
        log.error("health: %s; /health reports an error until it is fixed", exc)
        return 0.0


if (_interval := _sample_interval()) > 0:
    app.timer(interval=_interval, name="health-sample")(_sample_health)
