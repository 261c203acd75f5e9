"""The one protection wrapper every provider call goes through.

:meth:`Guard.call` runs one logical call (a send, a batch lookup, a
completion) as up to ``retry.attempts`` attempts. Each attempt goes through,
in order:

1. **breaker check** — an open breaker raises
   :class:`~providers.errors.CircuitOpenError` (``retry_at``) before anything
   else, so no rate slot is spent on a dead provider;
2. **rate limiter** — wait (``await``, no CPU) for this account's next
   evenly spaced slot; the daily cap or a wait longer than ``max_wait``
   raises a :class:`~providers.errors.BackpressureError`. The slot is
   reported finished when the attempt ends, so the call N later starts at
   least one window after this one's answer (the limiter's module docstring);
3. **breaker permit** — in half-open state only the probe gets through;
4. **timeout** — the adapter gets the per-attempt timeout (default 5 s) and
   enforces it on the wire, where it can tell "not sent" from "sent, no
   answer"; the guard adds a backstop one second later;
5. **outcome** — recorded in the breaker (``breaker_failure`` of the error
   class), the cost ledger (attempts, failures, units on success),
   :mod:`streams.metrics` (calls by outcome, duration, 429s) and the
   optional observer;
6. **retry** — only :class:`~providers.errors.RetryableProviderError`, after a
   full-jitter exponential backoff or the provider's ``Retry-After`` (a 429
   also holds back the account's limiter until then). When attempts run out
   the caller gets :class:`~providers.errors.GiveUpError`.

A call refused in steps 1-3 (open breaker, rate-limit wait too long, daily
cap) is counted in ``leadflow_provider_backpressure_total`` and re-raised.

Calls with side effects (``side_effect=True``: sends) never retry an
:class:`~providers.errors.AmbiguousOutcomeError`; it is raised with the
send's idempotency key so the pipeline can reconcile. For side-effect-free
calls (lookups, completions) a lost answer is just a retryable timeout.
Every attempt of one call carries the same idempotency key (the adapter
derives it from the message, not from the attempt).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from providers.breaker import CircuitBreaker
from providers.cost import Charge, CostLedger
from providers.errors import (
    AmbiguousOutcomeError,
    BackpressureError,
    ConnectionFailedError,
    GiveUpError,
    ProviderCallError,
    ProviderTimeoutError,
    RateLimitedError,
    RetryableProviderError,
    ThrottledError,
)
from providers.ratelimit import Clock, Grant, RateLimiter, Sleep
from providers.retry import RetryPolicy
from streams import metrics

__all__ = ["Attempt", "Guard", "GuardObserver"]

T = TypeVar("T")

_log = logging.getLogger(__name__)

#: Seconds the guard's own timeout trails the adapter's (the adapter should win).
_BACKSTOP_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """What an operation learns about the attempt it is running."""

    number: int
    timeout: float


class GuardObserver(Protocol):
    """Metrics hook: told about every attempt (``outcome`` is ``ok`` or an error reason)."""

    def on_attempt(self, provider: str, outcome: str, seconds: float) -> None:
        """One attempt ended."""
        ...


class Guard:
    """Limiter → breaker → timeout → retry → cost accounting, for one provider.

    ``limiter`` may be shared by guards of one provider account. ``max_wait``
    caps how long a call queues for a rate slot before raising
    :class:`ThrottledError` (None: no cap). ``backstop_grace`` is how long
    after ``timeout`` the guard itself abandons an attempt.
    """

    def __init__(
        self,
        provider: str,
        *,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 5.0,
        max_wait: float | None = None,
        ledger: CostLedger | None = None,
        observer: GuardObserver | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        backstop_grace: float = _BACKSTOP_GRACE,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.provider = provider
        self.limiter = limiter
        self.breaker = breaker
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = timeout
        self.max_wait = max_wait
        self.ledger = ledger if ledger is not None else CostLedger()
        self.observer = observer
        self._clock = clock
        self._sleep = sleep
        self._grace = backstop_grace

    @classmethod
    def passthrough(cls, provider: str, *, timeout: float = 5.0) -> Guard:
        """A guard with no limiter, no breaker and a single attempt (tests, benchmarks)."""
        return cls(provider, retry=RetryPolicy(attempts=1), timeout=timeout)

    async def call(
        self,
        operation: Callable[[Attempt], Awaitable[T]],
        *,
        charge: Callable[[T], Iterable[Charge]],
        side_effect: bool,
        idempotency_key: str = "",
        ambiguous_charge: Charge | None = None,
    ) -> T:
        """Run ``operation`` under the protection described in the module docstring.

        ``charge`` turns a successful result into cost charges.
        ``ambiguous_charge`` is booked when a send ends ambiguous.
        """
        attempt = 0
        while True:
            attempt += 1
            breaker = self.breaker
            grant = await self._admit()
            started = self._clock()
            try:
                result = await self._attempt(operation, Attempt(attempt, self.timeout), side_effect)
            except ProviderCallError as exc:
                error = exc
            except BaseException:
                if breaker is not None:
                    breaker.release()
                raise
            else:
                self._record(started, None)
                self.ledger.charge(self.provider, charge(result))
                return result
            finally:
                if grant is not None:
                    grant.finish()  # the call N later may go one window from now

            self._record(started, error)
            if isinstance(error, AmbiguousOutcomeError):
                if idempotency_key and not error.idempotency_key:
                    error.idempotency_key = idempotency_key
                if ambiguous_charge is not None:
                    self.ledger.charge(self.provider, [ambiguous_charge])
                raise error
            if not isinstance(error, RetryableProviderError):
                raise error
            if isinstance(error, RateLimitedError) and error.retry_after and self.limiter:
                self.limiter.block_until(self._clock() + error.retry_after)
            if self.retry.too_long(error):
                assert error.retry_after is not None
                raise ThrottledError(
                    self.provider,
                    f"provider asked to retry after {error.retry_after:g}s "
                    f"(> {self.retry.max_retry_after:g}s)",
                    retry_at=self._clock() + error.retry_after,
                    retry_after=error.retry_after,
                    status=error.status,
                ) from error
            if not self.retry.should_retry(error, attempt):
                raise GiveUpError(self.provider, attempt, error) from error
            await self._sleep(self.retry.delay(error, attempt))

    async def _admit(self) -> Grant | None:
        """Steps 1-3: breaker check, rate slot, breaker permit; the slot to finish, if any."""
        breaker = self.breaker
        grant = None
        try:
            if breaker is not None:
                breaker.check()
            if self.limiter is not None:
                grant = await self.limiter.reserve(max_wait=self.max_wait)
            if breaker is not None:
                breaker.before_call()
        except BaseException as exc:
            if grant is not None:
                grant.finish()
            if isinstance(exc, BackpressureError):
                metrics.provider_backpressure(self.provider, exc.reason)
            raise
        return grant

    async def _attempt(
        self,
        operation: Callable[[Attempt], Awaitable[T]],
        attempt: Attempt,
        side_effect: bool,
    ) -> T:
        try:
            async with asyncio.timeout(attempt.timeout + self._grace):
                return await operation(attempt)
        except TimeoutError:
            # The adapter did not enforce its timeout; we cannot know what was sent.
            if side_effect:
                raise AmbiguousOutcomeError(
                    self.provider, "no answer within the call timeout", timed_out=True
                ) from None
            raise ProviderTimeoutError(self.provider, "no answer within the call timeout") from None
        except AmbiguousOutcomeError as exc:
            if side_effect:
                raise
            # A lost answer to a lookup is just a failed attempt: ask again.
            if exc.timed_out:
                raise ProviderTimeoutError(self.provider, exc.detail, status=exc.status) from exc
            raise ConnectionFailedError(self.provider, exc.detail, status=exc.status) from exc

    def _record(self, started: float, error: ProviderCallError | None) -> None:
        elapsed = self._clock() - started
        breaker = self.breaker
        if breaker is not None:
            if error is not None and error.breaker_failure:
                breaker.record_failure()
            else:
                breaker.record_success()
        self.ledger.record_call(self.provider, ok=error is None)
        metrics.provider_attempt(self.provider, "ok" if error is None else error.reason, elapsed)
        if self.observer is not None:
            try:
                self.observer.on_attempt(
                    self.provider, "ok" if error is None else error.reason, elapsed
                )
            except Exception:
                # A metrics hook must never break a provider call.
                _log.exception("guard observer failed for %s", self.provider)

    def __repr__(self) -> str:
        return (
            f"Guard({self.provider!r}, timeout={self.timeout:g}s, {self.retry.attempts} attempts)"
        )
