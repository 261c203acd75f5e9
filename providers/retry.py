"""When to try a failed call again, and how long to wait first.

Only :class:`~providers.errors.RetryableProviderError` is retried (timeouts,
connection failures, 5xx, 429). Everything else — a permanent 4xx, a garbage
answer, an ambiguous send, an open breaker — ends the call at once.

The wait before retry *n* (n = 1 after the first attempt) is "full jitter"
exponential backoff::

    delay = uniform(0, min(max_delay, base * 2 ** (n - 1)))

so many workers that failed together do not come back together. When the
provider said ``Retry-After``, the wait is at least that long (plus up to
10 % jitter). A ``Retry-After`` longer than ``max_retry_after`` is not waited
out inside the call: the guard turns it into a
:class:`~providers.errors.ThrottledError` so the stage pauses instead.

Defaults: 3 attempts in all, 5 s base, 60 s cap, Retry-After up to 60 s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from providers.errors import ProviderConfigError, RetryableProviderError

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts and backoff. ``attempts`` counts the first try (3 = 1 + 2 retries)."""

    attempts: int = 3
    base: float = 5.0
    max_delay: float = 60.0
    max_retry_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ProviderConfigError(f"retry attempts must be >= 1, got {self.attempts}")
        if self.base < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ProviderConfigError("retry delays must be >= 0")

    def should_retry(self, error: Exception, attempt: int) -> bool:
        """Whether to try again after ``attempt`` (1-based) failed with ``error``."""
        return isinstance(error, RetryableProviderError) and attempt < self.attempts

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential delay after failed attempt ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base * 2 ** max(0, attempt - 1))
        return self.rng.uniform(0.0, ceiling)

    def delay(self, error: RetryableProviderError, attempt: int) -> float:
        """Seconds to wait before the next attempt, honouring ``Retry-After``."""
        if error.retry_after is not None and error.retry_after >= 0:
            return error.retry_after + self.rng.uniform(0.0, 0.1 * error.retry_after)
        return self.backoff(attempt)

    def too_long(self, error: RetryableProviderError) -> bool:
        """True when the provider asked for a wait the call should not sit through."""
        return error.retry_after is not None and error.retry_after > self.max_retry_after
