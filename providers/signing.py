"""HMAC-SHA256 signatures for the webhooks providers send to leadflow.

The sender (the simulator, or a provider bridge) signs ``f"{timestamp}.{raw body}"``
with a shared secret and sends two headers::

    X-Leadflow-Timestamp: 1767225600
    X-Leadflow-Signature: sha256=<hex digest>

The receiver (the pipeline's webhook endpoint) calls :func:`verify` with the raw
body bytes, before parsing them. It checks, in this order: both headers present,
well formed, a timestamp within ``tolerance_s`` of ``now``, the signature (in
constant time), and finally that the (timestamp, signature) pair was not seen
before. A failure raises :class:`WebhookSignatureError`, whose ``reason`` is one
of :data:`REASONS`.

Several secrets may be given to :func:`verify` (during a rotation); the
signature header may carry several comma-separated ``sha256=`` values.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from streams.errors import LeadflowError

__all__ = [
    "REASONS",
    "SIGNATURE_HEADER",
    "SIGNATURE_PREFIX",
    "TIMESTAMP_HEADER",
    "ReplayCache",
    "WebhookSignatureError",
    "sign",
    "signed_headers",
    "verify",
]

#: Header carrying the unix time (whole seconds) the sender signed at.
TIMESTAMP_HEADER: Final = "X-Leadflow-Timestamp"
#: Header carrying ``sha256=<hex>``.
SIGNATURE_HEADER: Final = "X-Leadflow-Signature"
#: Scheme prefix of every signature value.
SIGNATURE_PREFIX: Final = "sha256="

#: Every ``reason`` a :class:`WebhookSignatureError` can carry.
REASONS: Final = frozenset({"missing", "malformed", "stale_timestamp", "bad_signature", "replayed"})


class WebhookSignatureError(LeadflowError):
    """A webhook's signature headers are missing, malformed, stale, wrong or replayed.

    ``reason`` is one of :data:`REASONS` and is safe as a metric label.
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:  # pragma: no cover - programming error
            raise ValueError(f"unknown webhook signature reason {reason!r}")
        self.reason = reason
        self.detail = detail
        super().__init__(f"webhook signature rejected ({reason}): {detail}")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at unix time ``timestamp``."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return SIGNATURE_PREFIX + hmac.new(secret, message, hashlib.sha256).hexdigest()


def signed_headers(secret: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    """Both signature headers (plus the JSON content type) for a webhook POST."""
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(int(timestamp)),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


class ReplayCache:
    """A bounded memory of (timestamp, signature) pairs already accepted.

    Entries older than ``ttl_s`` are forgotten (a signature that old fails the
    timestamp check anyway, so ``ttl_s`` should be at least the verifier's
    tolerance). Beyond ``maxsize`` live entries the oldest are forgotten first.
    """

    def __init__(self, maxsize: int = 10_000, ttl_s: float = 600.0) -> None:
        if maxsize < 1:
            raise ValueError("ReplayCache maxsize must be >= 1")
        self.maxsize = maxsize
        self.ttl_s = ttl_s
        self._seen: OrderedDict[tuple[int, str], float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, item: object) -> bool:
        return item in self._seen

    def add(self, timestamp: int, signature: str, *, now: float) -> bool:
        """Remember the pair; False when it was already remembered (a replay)."""
        self._expire(now)
        key = (timestamp, signature)
        if key in self._seen:
            return False
        self._seen[key] = now
        while len(self._seen) > self.maxsize:
            self._seen.popitem(last=False)
        return True

    def _expire(self, now: float) -> None:
        horizon = now - self.ttl_s
        while self._seen:
            key, added = next(iter(self._seen.items()))
            if added >= horizon:
                break
            del self._seen[key]


def verify(
    secret: bytes | Sequence[bytes],
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    *,
    now: float,
    tolerance_s: float = 300.0,
    seen: ReplayCache | None = None,
) -> None:
    """Check a webhook's signature headers against ``body``; raise if they fail.

    ``secret`` is the shared secret, or several (any one may match).
    ``now`` is the current unix time (``time.time()``); a timestamp further than
    ``tolerance_s`` from it, in either direction, is stale. With ``seen``, a
    pair that verified before is rejected as ``replayed``.

    Raises :class:`WebhookSignatureError`; returns None when the webhook is good.
    """
    if not timestamp_header or not signature_header:
        missing = TIMESTAMP_HEADER if not timestamp_header else SIGNATURE_HEADER
        raise WebhookSignatureError("missing", f"no {missing} header")
    try:
        timestamp = int(timestamp_header.strip())
    except ValueError:
        raise WebhookSignatureError(
            "malformed", f"{TIMESTAMP_HEADER} is not unix seconds"
        ) from None
    candidates = [part.strip() for part in signature_header.split(",")]
    digests = [c for c in candidates if c.startswith(SIGNATURE_PREFIX)]
    if not digests:
        raise WebhookSignatureError(
            "malformed", f"{SIGNATURE_HEADER} has no {SIGNATURE_PREFIX} value"
        )
    if abs(now - timestamp) > tolerance_s:
        raise WebhookSignatureError(
            "stale_timestamp",
            f"timestamp is {now - timestamp:+.0f} s from now (tolerance {tolerance_s:.0f} s)",
        )
    secrets = [secret] if isinstance(secret, bytes | bytearray) else list(secret)
    matched: str | None = None
    for key in secrets:
        expected = sign(bytes(key), timestamp, body)
        for digest in digests:
            # Compare every candidate in constant time; no early exit on a prefix.
            if hmac.compare_digest(expected.encode("ascii"), digest.encode("ascii", "replace")):
                matched = digest
    if matched is None:
        raise WebhookSignatureError("bad_signature", "signature does not match the body")
    if seen is not None and not seen.add(timestamp, matched, now=now):
        raise WebhookSignatureError("replayed", "this signature was already accepted")
