"""A circuit breaker per provider: closed → open → half-open → closed.

* **closed**: calls go through; the last ``window`` outcomes are kept. Once
  at least ``min_calls`` are in the window and the share of failures reaches
  ``error_rate`` (default 50 %), the breaker **opens**.
* **open**: no call goes through (:meth:`CircuitBreaker.before_call` raises
  :class:`~providers.errors.CircuitOpenError` carrying ``retry_at``). The
  stage uses ``retry_at`` to pause the provider's partitions instead of
  failing every lead. After ``reset_timeout`` (default 30 s) it turns
  **half-open**.
* **half-open**: ``half_open_calls`` probe calls (default 1) go through; if
  they all succeed the breaker **closes** with an empty window, and the
  first failure **opens** it again for another ``reset_timeout``.

Which outcomes are failures is decided by the error class
(``breaker_failure``): timeouts, connection failures, 5xx, ambiguous
outcomes, garbage answers and refused credentials count; a 429 or a
permanent 4xx (an invalid number) does not — the provider is healthy.

Listeners (``add_listener``) hear every state change, for logs and hooks.
Every breaker also reports to :mod:`streams.metrics`: its state is read at
each scrape (``leadflow_provider_breaker_state``) and every change is
counted (``leadflow_provider_breaker_transitions_total``).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from providers.errors import CircuitOpenError, ProviderConfigError
from streams import metrics

__all__ = ["BreakerConfig", "BreakerListener", "BreakerState", "CircuitBreaker"]

_log = logging.getLogger(__name__)


class BreakerState(StrEnum):
    """The three states; values are label-safe."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: Called as ``listener(provider, old_state, new_state)`` on every change.
BreakerListener = Callable[[str, BreakerState, BreakerState], None]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Breaker knobs; the defaults are the issue's (50 % over >= 10 calls, 30 s)."""

    window: int = 20
    min_calls: int = 10
    error_rate: float = 0.5
    reset_timeout: float = 30.0
    half_open_calls: int = 1
    #: How long a half-open probe may take before others are told to retry.
    probe_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.window < 1 or not 1 <= self.min_calls <= self.window:
            raise ProviderConfigError(
                f"breaker window ({self.window}) and min calls ({self.min_calls}) "
                "need 1 <= min_calls <= window"
            )
        if not 0.0 < self.error_rate <= 1.0:
            raise ProviderConfigError(f"breaker error rate {self.error_rate} must be in (0, 1]")
        if self.reset_timeout <= 0 or self.probe_timeout <= 0 or self.half_open_calls < 1:
            raise ProviderConfigError("breaker timeouts and half-open calls must be positive")


class CircuitBreaker:
    """The breaker of one provider. Not thread-safe; use it from one event loop."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config if config is not None else BreakerConfig()
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._outcomes: deque[bool] = deque(maxlen=self.config.window)
        self._failures = 0
        self._opened_until = 0.0
        self._probes = 0
        self._probe_successes = 0
        self._probe_started = 0.0
        self._listeners: list[BreakerListener] = []
        self.opened_count = 0
        metrics.track_breaker(self)

    # --- reading ----------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (an open breaker past its reset timeout reads half-open)."""
        self._settle(self._clock())
        return self._state

    @property
    def retry_at(self) -> float | None:
        """When (monotonic) a call may be tried again, or None if calls may go now."""
        now = self._clock()
        self._settle(now)
        if self._state is BreakerState.OPEN:
            return self._opened_until
        if self._state is BreakerState.HALF_OPEN and self._probes >= self.config.half_open_calls:
            return self._probe_started + self.config.probe_timeout
        return None

    def retry_after(self) -> float:
        """Seconds until a call may be tried (0 if it may go now)."""
        at = self.retry_at
        return 0.0 if at is None else max(0.0, at - self._clock())

    @property
    def error_rate(self) -> float:
        """Failures / outcomes in the current window (0 when empty)."""
        return self._failures / len(self._outcomes) if self._outcomes else 0.0

    def add_listener(self, listener: BreakerListener) -> None:
        """Call ``listener(provider, old, new)`` on every state change."""
        self._listeners.append(listener)

    # --- the call protocol ------------------------------------------------------------

    def before_call(self) -> None:
        """Let a call through or raise :class:`CircuitOpenError` with ``retry_at``.

        In half-open state this takes one of the probe permits; the caller
        must then report :meth:`record_success`, :meth:`record_failure` or
        :meth:`release`.
        """
        now = self._clock()
        self._settle(now)
        if self._state is BreakerState.CLOSED:
            return
        if self._state is BreakerState.HALF_OPEN and self._probes < self.config.half_open_calls:
            if self._probes == 0:
                self._probe_started = now
            self._probes += 1
            return
        retry_at = self.retry_at
        assert retry_at is not None
        raise CircuitOpenError(
            self.name,
            f"circuit {self._state.value} after {self.config.error_rate:.0%} errors; "
            f"retry in {max(0.0, retry_at - now):.1f}s",
            retry_at=retry_at,
            retry_after=retry_at - now,
        )

    def check(self) -> None:
        """Raise :class:`CircuitOpenError` if a call could not go now; take no permit."""
        retry_at = self.retry_at
        if retry_at is not None:
            now = self._clock()
            raise CircuitOpenError(
                self.name,
                f"circuit {self._state.value}; retry in {max(0.0, retry_at - now):.1f}s",
                retry_at=retry_at,
                retry_after=retry_at - now,
            )

    def record_success(self) -> None:
        """The call got a healthy answer."""
        if self._state is BreakerState.HALF_OPEN:
            self._probe_successes += 1
            if self._probe_successes >= self.config.half_open_calls:
                self._transition(BreakerState.CLOSED, self._clock())
            return
        if self._state is BreakerState.CLOSED:
            self._add(ok=True)

    def record_failure(self) -> None:
        """The call failed in a way that says the provider is unhealthy."""
        now = self._clock()
        if self._state is BreakerState.HALF_OPEN:
            self._transition(BreakerState.OPEN, now)
            return
        if self._state is BreakerState.CLOSED:
            self._add(ok=False)
            cfg = self.config
            if len(self._outcomes) >= cfg.min_calls and self.error_rate >= cfg.error_rate:
                self._transition(BreakerState.OPEN, now)

    def release(self) -> None:
        """A permitted call ended with no verdict (cancelled); free its probe permit."""
        if self._state is BreakerState.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    # --- internals --------------------------------------------------------------------

    def _add(self, *, ok: bool) -> None:
        outcomes = self._outcomes
        if len(outcomes) == outcomes.maxlen and not outcomes[0]:
            self._failures -= 1
        outcomes.append(ok)
        if not ok:
            self._failures += 1

    def _settle(self, now: float) -> None:
        if self._state is BreakerState.OPEN and now >= self._opened_until:
            self._transition(BreakerState.HALF_OPEN, now)

    def _transition(self, new: BreakerState, now: float) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self._outcomes.clear()
        self._failures = 0
        self._probes = 0
        self._probe_successes = 0
        if new is BreakerState.OPEN:
            self._opened_until = now + self.config.reset_timeout
            self.opened_count += 1
        metrics.provider_breaker_transition(self.name, new.value)
        for listener in list(self._listeners):
            try:
                listener(self.name, old, new)
            except Exception:
                # A metrics hook must never break a provider call.
                _log.exception("breaker listener failed for %s", self.name)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, {self._state.value})"
