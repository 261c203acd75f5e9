"""Stall detection for the partition watchdog (see :mod:`agents.watchdog`).

The partition watchdog: a partition with work waiting and no progress gets unstuck.

Faust has known cases where an assigned partition stops moving while the
others flow (faust-streaming #166 and #629: a partition left paused after
flow control or a rebalance, or a fetch position lost after a seek). Its
lag then grows without an error anywhere. Every
``LEADFLOW_WATCHDOG_INTERVAL_S`` the watchdog looks at each assigned input
partition of the stages. A partition whose end offset is past its committed
offset, and whose committed offset has not moved for
``LEADFLOW_WATCHDOG_STALL_S``, is *stalled*. The watchdog then logs it (topic,
partition and offsets only), counts it, resumes the partition and seeks it
back to its committed offset, so the records from there are fetched again.
Re-delivery is safe: every stage is idempotent (the state table skips steps
already taken, sends are claimed once in the ledger).

A stage that is deliberately holding a batch (Postgres down, a provider's
breaker open) also stops committing; the nudge is then harmless and repeats
at most once per stall period.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.settings import load_from_env, setting

__all__ = ["Position", "Stall", "StallDetector", "WatchdogSettings"]


@dataclass(frozen=True)
class WatchdogSettings:
    """How often the watchdog looks and when a partition counts as stalled."""

    interval_s: float = setting(
        10.0,
        "LEADFLOW_WATCHDOG_INTERVAL_S",
        "Seconds between the partition watchdog's checks (0 turns the watchdog off).",
    )
    stall_s: float = setting(
        60.0,
        "LEADFLOW_WATCHDOG_STALL_S",
        "A partition with lag whose committed offset has not moved for this long is "
        "stalled: the watchdog resumes it and seeks it back to its committed offset.",
    )

    sweep_interval_s: float = setting(
        15.0,
        "LEADFLOW_SWEEP_INTERVAL_S",
        "Seconds between sweeps for leads whose touch has an outcome but whose sequence "
        "never moved on (0 turns the sweeper off).",
    )
    sweep_after_s: float = setting(
        30.0,
        "LEADFLOW_SWEEP_AFTER_S",
        "A touch outcome older than this (wall seconds) with no next step is re-published "
        "on `sent`, so the sequence stage takes it up again.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WatchdogSettings:
        """Read the settings from the environment."""
        return load_from_env(cls, environ)


@dataclass(frozen=True)
class Position:
    """What the worker knows of one partition at one moment."""

    committed: int | None
    end: int | None


@dataclass(frozen=True)
class Stall:
    """A partition found stalled."""

    tp: Any
    committed: int
    end: int
    stalled_for_s: float


@dataclass
class StallDetector:
    """Tracks committed offsets over time and names the partitions that stopped moving."""

    stall_s: float
    #: tp -> (committed offset last seen, when it was first seen at that value).
    _since: dict[Any, tuple[int | None, float]] = field(default_factory=dict)

    def observe(self, positions: Mapping[Any, Position], now: float) -> list[Stall]:
        """Record ``positions`` seen at ``now``; return the stalled partitions.

        A partition reported stalled starts a new period, so it is reported
        again only after another ``stall_s`` without progress.
        """
        stalls = []
        for tp in list(self._since):
            if tp not in positions:  # revoked
                del self._since[tp]
        for tp, pos in positions.items():
            seen = self._since.get(tp)
            if seen is None or seen[0] != pos.committed:
                self._since[tp] = (pos.committed, now)
                continue
            committed = pos.committed if pos.committed is not None else 0
            if pos.end is None or pos.end <= committed:
                self._since[tp] = (pos.committed, now)  # nothing waiting: not a stall
                continue
            if now - seen[1] >= self.stall_s:
                stalls.append(Stall(tp, committed, pos.end, now - seen[1]))
                self._since[tp] = (pos.committed, now)
        return stalls
