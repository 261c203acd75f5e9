"""The provider error tree: one family, typed, label-safe, naming provider and status."""

from __future__ import annotations

import re

import providers.errors as errors_module
from providers.errors import (
    AmbiguousOutcomeError,
    BackpressureError,
    CircuitOpenError,
    GiveUpError,
    InvalidRecipientError,
    PermanentProviderError,
    ProviderCallError,
    ProviderConfigError,
    RateLimitedError,
    RetryableProviderError,
    ServerError,
)
from streams.errors import ConfigError, LeadflowError, ProviderError, TransientError


def _classes() -> list[type[Exception]]:
    return [
        obj
        for name in errors_module.__all__
        if isinstance(obj := getattr(errors_module, name), type)
    ]


def test_every_error_is_in_the_one_tree() -> None:
    for cls in _classes():
        assert issubclass(cls, LeadflowError), cls
        assert issubclass(cls, ProviderError | ConfigError), cls
    assert issubclass(ProviderConfigError, ConfigError)


def test_reasons_are_unique_and_label_safe() -> None:
    reasons = [cls.reason for cls in _classes()]  # type: ignore[attr-defined]
    assert len(reasons) == len(set(reasons))
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", r) for r in reasons)


def test_message_names_provider_status_and_code() -> None:
    err = InvalidRecipientError(
        "sms-http", "HTTP 400 invalid_number", status=400, code="invalid_number"
    )
    assert str(err) == "provider 'sms-http' (status 400) [invalid_number]: HTTP 400 invalid_number"
    assert isinstance(err, PermanentProviderError)
    assert not err.breaker_failure


def test_retryable_and_permanent_do_not_overlap() -> None:
    assert not issubclass(AmbiguousOutcomeError, RetryableProviderError | PermanentProviderError)
    assert not issubclass(BackpressureError, RetryableProviderError | PermanentProviderError)
    assert RateLimitedError("p", "x").breaker_failure is False
    assert ServerError("p", "x").breaker_failure is True


def test_give_up_carries_attempts_and_last_error() -> None:
    last = ServerError("sms-http", "HTTP 503", status=503)
    err = GiveUpError("sms-http", 3, last)
    assert (err.attempts, err.last_error, err.status) == (3, last, 503)
    assert "3 attempt" in str(err) and "server_error" in str(err)
    assert isinstance(err, ProviderCallError)


def test_backpressure_is_transient_so_stages_hold_instead_of_dead_lettering() -> None:
    assert issubclass(BackpressureError, TransientError)
    assert not issubclass(GiveUpError, TransientError)


def test_backpressure_never_negative() -> None:
    err = CircuitOpenError("sms-http", "open", retry_at=10.0, retry_after=-1.0)
    assert err.retry_after == 0.0
    assert err.retry_at == 10.0
