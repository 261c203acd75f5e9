"""Test helpers for the provider tests (imported by conftest and the test modules)."""

from __future__ import annotations

import asyncio


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it.

    ``sleep(d)`` yields once to the loop, then moves time to (time at the call
    + d) if that is later, so concurrent sleepers wake in slot order.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        target = self.now + max(0.0, seconds)
        await asyncio.sleep(0)
        self.now = max(self.now, target)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def max_in_window(times: list[float], window: float) -> int:
    """Most events in any half-open window [t, t + window).

    Events within a nanosecond of a window edge count as outside it (float
    rounding of sums of intervals, not a real excess).
    """
    times = sorted(times)
    best = 0
    lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window + 1e-9:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
