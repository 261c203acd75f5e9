"""Per-endpoint decisions: outage, rate limit, injected error, latency, drop, timeout.

:class:`EndpointBehaviour` is pure decision logic over an injectable clock and a
seeded :class:`random.Random`; the HTTP and SMTP front ends act on its
:class:`Decision`. Order of checks for one request: outage (503), rate limit
(429, the request does not count against the window), then one draw that picks
an injected error (500), a timeout (hang, not accepted), a drop after accept,
or a normal answer; the latency is drawn for every admitted request.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from simulator.config import EndpointConfig, Latency

__all__ = [
    "Clock",
    "Decision",
    "EndpointBehaviour",
    "Outcome",
    "SlidingWindowLimiter",
    "sample_latency_s",
]

#: A monotonic clock in seconds (``time.monotonic`` unless a test injects one).
Clock = Callable[[], float]

_Z99: Final = 2.3263478740408408  # standard normal 99th percentile


class Outcome(Enum):
    """What the front end should do with a request."""

    OK = "ok"
    OUTAGE = "outage"
    RATE_LIMITED = "rate_limited"
    ERROR = "error"
    TIMEOUT = "timeout"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome, the latency to add first, and Retry-After for 429/503."""

    outcome: Outcome
    latency_s: float = 0.0
    retry_after_s: int = 0


def sample_latency_s(latency: Latency, rng: random.Random) -> float:
    """One draw from ``latency``, in seconds (lognormal draws are capped at 10×p99)."""
    if latency.dist == "fixed":
        return latency.ms / 1000.0
    if latency.dist == "uniform":
        return rng.uniform(latency.min_ms, latency.max_ms) / 1000.0
    mu = math.log(latency.median_ms)
    sigma = (math.log(latency.p99_ms) - mu) / _Z99 if latency.p99_ms > latency.median_ms else 0.0
    draw = rng.lognormvariate(mu, sigma) if sigma > 0 else latency.median_ms
    return min(draw, 10.0 * latency.p99_ms) / 1000.0


class SlidingWindowLimiter:
    """At most ``limit`` admissions in any window of ``per_s`` seconds."""

    def __init__(self, limit: int, per_s: float) -> None:
        self.limit = limit
        self.per_s = per_s
        self._admitted: deque[float] = deque()

    def try_admit(self, now: float) -> float:
        """Admit (returns 0.0) or return the seconds until a slot frees."""
        horizon = now - self.per_s
        while self._admitted and self._admitted[0] <= horizon:
            self._admitted.popleft()
        if len(self._admitted) < self.limit:
            self._admitted.append(now)
            return 0.0
        return self._admitted[0] + self.per_s - now

    def reset(self) -> None:
        """Forget every admission."""
        self._admitted.clear()


class EndpointBehaviour:
    """Decides the fate of each request to one endpoint."""

    def __init__(
        self,
        name: str,
        config: EndpointConfig,
        rng: random.Random,
        *,
        clock: Clock = time.monotonic,
        started_at: float | None = None,
    ) -> None:
        self.name = name
        self.rng = rng
        self.clock = clock
        self.started_at = clock() if started_at is None else started_at
        self.config = config
        self._limiter = self._make_limiter(config)

    @staticmethod
    def _make_limiter(config: EndpointConfig) -> SlidingWindowLimiter | None:
        limit = config.rate_limit
        return None if limit is None else SlidingWindowLimiter(limit.limit, limit.per_s)

    def update(self, config: EndpointConfig) -> None:
        """Switch to ``config``; the rate-limit window survives unless the limit changed."""
        if config.rate_limit != self.config.rate_limit:
            self._limiter = self._make_limiter(config)
        self.config = config

    def reset(self) -> None:
        """Forget the rate-limit window."""
        if self._limiter is not None:
            self._limiter.reset()

    def uptime_s(self) -> float:
        """Seconds since the simulator started (the origin of outage windows)."""
        return self.clock() - self.started_at

    def decide(self) -> Decision:
        """The decision for one request arriving now."""
        config = self.config
        now = self.clock()
        uptime = now - self.started_at
        for start, end in config.outages:
            if start <= uptime < end:
                return Decision(Outcome.OUTAGE, retry_after_s=_ceil_s(end - uptime))
        if self._limiter is not None:
            wait = self._limiter.try_admit(now)
            if wait > 0:
                return Decision(Outcome.RATE_LIMITED, retry_after_s=_ceil_s(wait))
        latency = sample_latency_s(config.latency, self.rng)
        draw = self.rng.random()
        if draw < config.error_rate:
            return Decision(Outcome.ERROR, latency_s=latency)
        draw -= config.error_rate
        if draw < config.timeout_rate:
            return Decision(Outcome.TIMEOUT, latency_s=latency)
        draw -= config.timeout_rate
        if draw < config.drop_after_accept_rate:
            return Decision(Outcome.DROP, latency_s=latency)
        return Decision(Outcome.OK, latency_s=latency)


def _ceil_s(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-9))
