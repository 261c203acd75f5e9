"""In-process cost ledger: what each provider and each campaign has spent.

The guard records every attempt (``calls``, ``failed_calls``) per provider
and, for every successful call, the provider's ``cost_units`` per provider
and per (campaign, provider). The enrichment cache records the lookups it
saved (``cache_hits``, ``cache_saved_units``) the same way, so "what did the
cache save us" is a query, not a guess.

A send whose outcome is ambiguous is charged its configured default cost:
the provider probably sent it.

The ledger is a plain in-memory accumulator guarded by a lock (safe from any
thread). The pipeline drains it periodically (:meth:`CostLedger.drain`) and
writes the deltas to Postgres. Units and cache hits also go to
:mod:`streams.metrics` as they are recorded (``leadflow_provider_cost_units_total``,
``leadflow_provider_cache_hits_total``), whatever drains the ledger.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace

from streams import metrics

__all__ = ["Charge", "CostLedger", "CostSnapshot", "CostTotals"]


@dataclass(frozen=True, slots=True)
class Charge:
    """``units`` of cost for ``items`` messages or leads of ``campaign_id``."""

    campaign_id: str
    units: float
    items: int = 1


@dataclass(frozen=True, slots=True)
class CostTotals:
    """Counters of one provider or one (campaign, provider) pair.

    ``calls``/``failed_calls`` count provider requests (attempts) and are kept
    per provider only; a batch call serves several campaigns.
    """

    calls: int = 0
    failed_calls: int = 0
    units: float = 0.0
    items: int = 0
    cache_hits: int = 0
    cache_saved_units: float = 0.0


@dataclass(frozen=True, slots=True)
class CostSnapshot:
    """Totals per provider and per (campaign, provider)."""

    by_provider: dict[str, CostTotals]
    by_campaign: dict[tuple[str, str], CostTotals]

    def campaign_units(self, campaign_id: str) -> float:
        """All units a campaign spent, over every provider."""
        return sum(t.units for (c, _), t in self.by_campaign.items() if c == campaign_id)


class CostLedger:
    """Accumulates :class:`CostTotals`; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._providers: dict[str, CostTotals] = {}
        self._campaigns: dict[tuple[str, str], CostTotals] = {}

    def record_call(self, provider: str, *, ok: bool) -> None:
        """Count one request to ``provider`` (``ok=False``: it failed)."""
        with self._lock:
            t = self._providers.get(provider, _ZERO)
            self._providers[provider] = replace(
                t, calls=t.calls + 1, failed_calls=t.failed_calls + (0 if ok else 1)
            )

    def charge(self, provider: str, charges: Iterable[Charge]) -> None:
        """Add each charge's units and items to ``provider`` and to its campaign."""
        with self._lock:
            for c in charges:
                t = self._providers.get(provider, _ZERO)
                self._providers[provider] = replace(
                    t, units=t.units + c.units, items=t.items + c.items
                )
                key = (c.campaign_id, provider)
                t = self._campaigns.get(key, _ZERO)
                self._campaigns[key] = replace(t, units=t.units + c.units, items=t.items + c.items)
                metrics.provider_cost(provider, c.units)

    def record_cache_hits(
        self, provider: str, campaign_id: str, hits: int, saved_units: float
    ) -> None:
        """``hits`` lookups answered from the cache, saving ``saved_units`` of cost."""
        if hits <= 0:
            return
        metrics.provider_cache_hits(provider, hits)
        with self._lock:
            t = self._providers.get(provider, _ZERO)
            self._providers[provider] = replace(
                t,
                cache_hits=t.cache_hits + hits,
                cache_saved_units=t.cache_saved_units + saved_units,
            )
            key = (campaign_id, provider)
            t = self._campaigns.get(key, _ZERO)
            self._campaigns[key] = replace(
                t,
                cache_hits=t.cache_hits + hits,
                cache_saved_units=t.cache_saved_units + saved_units,
            )

    def snapshot(self) -> CostSnapshot:
        """A copy of the totals so far."""
        with self._lock:
            return CostSnapshot(dict(self._providers), dict(self._campaigns))

    def drain(self) -> CostSnapshot:
        """The totals so far, resetting the ledger (for periodic flushes of deltas)."""
        with self._lock:
            snap = CostSnapshot(self._providers, self._campaigns)
            self._providers, self._campaigns = {}, {}
            return snap


_ZERO = CostTotals()
