"""Retry policy: which errors, full-jitter backoff, Retry-After."""

from __future__ import annotations

import random

import pytest

from providers.errors import (
    AmbiguousOutcomeError,
    BadResponseError,
    ClientError,
    ConnectionFailedError,
    ProviderConfigError,
    RateLimitedError,
    ServerError,
)
from providers.retry import RetryPolicy


def test_defaults_are_three_attempts_five_second_base() -> None:
    policy = RetryPolicy()
    assert (policy.attempts, policy.base) == (3, 5.0)


def test_only_retryable_errors_are_retried() -> None:
    policy = RetryPolicy()
    assert policy.should_retry(ServerError("p", "x", status=500), 1)
    assert policy.should_retry(ConnectionFailedError("p", "x"), 2)
    assert not policy.should_retry(ServerError("p", "x", status=500), 3)  # attempts used up
    assert not policy.should_retry(ClientError("p", "x", status=400), 1)
    assert not policy.should_retry(BadResponseError("p", "x", status=200), 1)
    assert not policy.should_retry(AmbiguousOutcomeError("p", "x"), 1)


def test_full_jitter_backoff_stays_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(base=5.0, max_delay=12.0, rng=random.Random(1))
    for attempt, ceiling in ((1, 5.0), (2, 10.0), (3, 12.0), (8, 12.0)):
        delays = [policy.backoff(attempt) for _ in range(300)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # jitter covers the range
        assert min(delays) < 0.2 * ceiling


def test_retry_after_is_honoured_with_a_little_jitter() -> None:
    policy = RetryPolicy(rng=random.Random(2))
    error = RateLimitedError("p", "HTTP 429", status=429, retry_after=7.0)
    delays = [policy.delay(error, 1) for _ in range(100)]
    assert all(7.0 <= d <= 7.7 for d in delays)
    assert len(set(delays)) > 1


def test_too_long_retry_after() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.too_long(RateLimitedError("p", "x", retry_after=61.0))
    assert not policy.too_long(RateLimitedError("p", "x", retry_after=60.0))
    assert not policy.too_long(ServerError("p", "x"))


def test_bad_policy_is_a_config_error() -> None:
    with pytest.raises(ProviderConfigError):
        RetryPolicy(attempts=0)
    with pytest.raises(ProviderConfigError):
        RetryPolicy(base=-1.0)
