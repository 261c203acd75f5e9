"""The typed outcomes of a provider call that did not simply succeed.

Every class here derives from :class:`streams.errors.ProviderError` (or, for
configuration, :class:`streams.errors.ConfigError`), so the whole family is
caught in one place::

    ProviderError
    ├── RetryableProviderError       may succeed if tried again (the guard retries)
    │   ├── ConnectionFailedError    nothing reached the provider (connect refused/timed out)
    │   ├── ProviderTimeoutError     a side-effect-free call got no answer in time
    │   ├── ServerError              HTTP 5xx (or SMTP 4xx), maybe with Retry-After
    │   └── RateLimitedError         HTTP 429, with Retry-After
    ├── PermanentProviderError       the same request will fail again (no retry)
    │   ├── InvalidRecipientError    the number or address is invalid
    │   ├── AuthenticationError      the credentials were refused (401/403)
    │   └── ClientError              any other 4xx (or SMTP 5xx)
    ├── BadResponseError             the provider answered garbage (names provider + status)
    ├── AmbiguousOutcomeError        a send was fully written, then the answer was lost
    ├── BackpressureError            stop pulling work for this provider until ``retry_at``
    │   │                            (also a streams.errors.TransientError)
    │   ├── CircuitOpenError         the circuit breaker is open (or probing)
    │   ├── DailyCapReachedError     the account's daily cap is used up
    │   └── ThrottledError           the limiter (or a long Retry-After) asks for a long wait
    └── GiveUpError                  retryable failures used up every attempt
    ConfigError
    └── ProviderConfigError          a provider endpoint/credential/limit is misconfigured

How the pipeline is expected to route them:

* :class:`PermanentProviderError`, :class:`GiveUpError`, :class:`BadResponseError`:
  quarantine the lead and dead-letter the record (``reason`` is the label).
* :class:`AmbiguousOutcomeError`: the provider may have acted; never re-send
  blindly, route the send to *reconcile* (the idempotency key is on the error).
* :class:`BackpressureError` (a :class:`streams.errors.TransientError`): pause
  the provider's partitions for ``retry_after`` seconds and process the record
  again afterwards; never dead-letter it.

Every error carries ``provider`` (a label-safe adapter name, never a URL with
credentials) and, where an HTTP answer existed, ``status``. Each class has a
stable, label-safe ``reason``. Messages never contain phone numbers, email
addresses, names or credentials.
"""

from __future__ import annotations

from streams.errors import ConfigError, ProviderError, TransientError

__all__ = [
    "AmbiguousOutcomeError",
    "AuthenticationError",
    "BackpressureError",
    "BadResponseError",
    "CircuitOpenError",
    "ClientError",
    "ConnectionFailedError",
    "DailyCapReachedError",
    "GiveUpError",
    "InvalidRecipientError",
    "PermanentProviderError",
    "ProviderCallError",
    "ProviderConfigError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "RetryableProviderError",
    "ServerError",
    "ThrottledError",
]


class ProviderCallError(ProviderError):
    """Base of every provider-call outcome; carries ``provider``, ``status``, ``detail``.

    ``status`` is the HTTP status (or SMTP reply code) when the provider
    answered, else ``None``. ``code`` is the provider's own error code when it
    sent one (``invalid_number``), else ``""``.
    """

    reason = "provider"
    #: Whether this outcome counts as a failure for the circuit breaker.
    breaker_failure: bool = True

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        status: int | None = None,
        code: str = "",
    ) -> None:
        self.provider = provider
        self.detail = detail
        self.status = status
        self.code = code
        super().__init__(self._message())

    def _message(self) -> str:
        status = f" (status {self.status})" if self.status is not None else ""
        code = f" [{self.code}]" if self.code else ""
        return f"provider {self.provider!r}{status}{code}: {self.detail}"


# --- retryable -----------------------------------------------------------------


class RetryableProviderError(ProviderCallError):
    """A failure that may succeed if the same request is tried again.

    ``retry_after`` is the provider's ``Retry-After`` in seconds, when it sent
    one; the retry policy waits at least that long.
    """

    reason = "retryable"

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        status: int | None = None,
        code: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(provider, detail, status=status, code=code)


class ConnectionFailedError(RetryableProviderError):
    """The request never reached the provider (connect refused, DNS, connect timeout).

    Nothing was sent, so a retry cannot duplicate anything.
    """

    reason = "connect_failed"


class ProviderTimeoutError(RetryableProviderError):
    """No answer within the call timeout, for a call without side effects.

    For a *send*, the same situation is an :class:`AmbiguousOutcomeError`.
    """

    reason = "timeout"


class ServerError(RetryableProviderError):
    """The provider failed on its side (HTTP 5xx, SMTP 4xx transient reply)."""

    reason = "server_error"


class RateLimitedError(RetryableProviderError):
    """The provider answered 429 Too Many Requests (``retry_after`` when it said)."""

    reason = "rate_limited"
    # Being told to slow down is not an outage.
    breaker_failure = False


# --- permanent -----------------------------------------------------------------


class PermanentProviderError(ProviderCallError):
    """The provider refused the request; sending it again would fail again."""

    reason = "permanent"
    # The provider answered sensibly: it is healthy, the request was bad.
    breaker_failure = False


class InvalidRecipientError(PermanentProviderError):
    """The phone number or email address is invalid or unreachable for good."""

    reason = "invalid_recipient"


class AuthenticationError(PermanentProviderError):
    """The provider refused the credentials (HTTP 401/403, SMTP 535).

    Counts as a breaker failure: with bad credentials every lead would fail,
    so the breaker opens and the stage pauses instead of quarantining them all.
    """

    reason = "auth_failed"
    breaker_failure = True


class ClientError(PermanentProviderError):
    """Any other 4xx answer (or SMTP 5xx): the request itself is wrong."""

    reason = "client_error"


# --- neither -------------------------------------------------------------------


class BadResponseError(ProviderCallError):
    """The provider answered something leadflow cannot read.

    Non-JSON, missing or mistyped fields, or a 2xx whose body is an error.
    Not retried (the same garbage would come back). For a *send* answered 2xx
    the message may have gone out, so the pipeline should reconcile it rather
    than re-send it.
    """

    reason = "bad_response"


class AmbiguousOutcomeError(ProviderCallError):
    """A send was fully written, then the connection dropped or no answer came.

    The provider may or may not have acted. The guard never retries this (a
    retry could send twice); the pipeline routes it to *reconcile*, using
    ``idempotency_key`` to ask the provider or to re-send safely where the
    provider deduplicates on it. ``timed_out`` tells a read timeout from a reset.
    """

    reason = "ambiguous"

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        status: int | None = None,
        code: str = "",
        timed_out: bool = False,
        idempotency_key: str = "",
    ) -> None:
        self.timed_out = timed_out
        self.idempotency_key = idempotency_key
        super().__init__(provider, detail, status=status, code=code)


class BackpressureError(ProviderCallError, TransientError):
    """Stop pulling work for ``provider`` for ``retry_after`` seconds.

    ``retry_at`` is the same instant on the guard's monotonic clock. The lead
    was not attempted (or its attempt was abandoned safely): process it again
    once the pause is over. It is also a :class:`streams.errors.TransientError`,
    so a stage that holds its batch on transient errors never dead-letters a
    lead for it; ``retry_after`` says how long to hold.
    """

    reason = "backpressure"
    breaker_failure = False

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        retry_at: float,
        retry_after: float,
        status: int | None = None,
    ) -> None:
        self.retry_at = retry_at
        self.retry_after = max(0.0, retry_after)
        super().__init__(provider, detail, status=status)


class CircuitOpenError(BackpressureError):
    """The provider's circuit breaker is open; no call was made."""

    reason = "circuit_open"


class DailyCapReachedError(BackpressureError):
    """The account's daily cap is used up until the next reset."""

    reason = "daily_cap"


class ThrottledError(BackpressureError):
    """The rate limiter (or a provider's long Retry-After) asks for a longer wait
    than the caller allows; the stage should pause rather than hold the task."""

    reason = "throttled"


class GiveUpError(ProviderCallError):
    """Every attempt failed with a retryable error; ``last_error`` is the final one."""

    reason = "give_up"

    def __init__(self, provider: str, attempts: int, last_error: RetryableProviderError) -> None:
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(
            provider,
            f"gave up after {attempts} attempt(s): {last_error.reason}: {last_error.detail}",
            status=last_error.status,
            code=last_error.code,
        )


# --- configuration ---------------------------------------------------------------


class ProviderConfigError(ConfigError):
    """A provider's adapter, endpoint, credentials or limits are misconfigured.

    Raised at start-up (settings validation, adapter construction), never at
    the first lead. The message names the environment variable to fix.
    """

    reason = "provider_config"
