"""providers/signing.py: sign, verify and the replay cache."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from providers.signing import (
    REASONS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayCache,
    WebhookSignatureError,
    sign,
    signed_headers,
    verify,
)
from streams.errors import LeadflowError

SECRET = b"shared-secret-for-tests"
BODY = b'{"event_id":"evt_1","kind":"opt_out","body":"STOP"}'
NOW = 1_767_225_600


def reason_of(excinfo: pytest.ExceptionInfo[WebhookSignatureError]) -> str:
    return excinfo.value.reason


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == f"sha256={expected}"


def test_signed_headers_verify() -> None:
    headers = signed_headers(SECRET, NOW, BODY)
    assert headers["Content-Type"] == "application/json"
    verify(SECRET, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], BODY, now=NOW + 5)


def test_signature_with_the_wrong_secret_is_rejected() -> None:
    with pytest.raises(WebhookSignatureError) as excinfo:
        verify(SECRET, str(NOW), sign(b"wrong-secret", NOW, BODY), BODY, now=NOW)
    assert reason_of(excinfo) == "bad_signature"
    assert isinstance(excinfo.value, LeadflowError)


def test_tampered_body_is_rejected() -> None:
    signature = sign(SECRET, NOW, BODY)
    with pytest.raises(WebhookSignatureError) as excinfo:
        verify(SECRET, str(NOW), signature, BODY.replace(b"STOP", b"START"), now=NOW)
    assert reason_of(excinfo) == "bad_signature"


def test_signature_for_another_timestamp_is_rejected() -> None:
    with pytest.raises(WebhookSignatureError) as excinfo:
        verify(SECRET, str(NOW + 1), sign(SECRET, NOW, BODY), BODY, now=NOW)
    assert reason_of(excinfo) == "bad_signature"


@pytest.mark.parametrize("offset", [-301, 301], ids=["old", "future"])
def test_stale_timestamp_is_rejected(offset: int) -> None:
    ts = NOW + offset
    with pytest.raises(WebhookSignatureError) as excinfo:
        verify(SECRET, str(ts), sign(SECRET, ts, BODY), BODY, now=NOW)
    assert reason_of(excinfo) == "stale_timestamp"
    verify(SECRET, str(ts), sign(SECRET, ts, BODY), BODY, now=NOW, tolerance_s=302)


def test_replay_is_rejected_with_a_cache() -> None:
    seen = ReplayCache()
    signature = sign(SECRET, NOW, BODY)
    verify(SECRET, str(NOW), signature, BODY, now=NOW, seen=seen)
    with pytest.raises(WebhookSignatureError) as excinfo:
        verify(SECRET, str(NOW), signature, BODY, now=NOW + 1, seen=seen)
    assert reason_of(excinfo) == "replayed"


def test_bad_signature_does_not_poison_the_replay_cache() -> None:
    seen = ReplayCache()
    with pytest.raises(WebhookSignatureError):
        verify(SECRET, str(NOW), "sha256=" + "0" * 64, BODY, now=NOW, seen=seen)
    assert len(seen) == 0


@pytest.mark.parametrize(
    ("timestamp", "signature", "reason"),
    [
        (None, "sha256=00", "missing"),
        ("", "sha256=00", "missing"),
        (str(NOW), None, "missing"),
        ("yesterday", "sha256=00", "malformed"),
        (str(NOW), "md5=abc", "malformed"),
    ],
)
def test_missing_or_malformed_headers(
    timestamp: str | None, signature: str | None, reason: str
) -> None:
    with pytest.raises(WebhookSignatureError) as excinfo:
        verify(SECRET, timestamp, signature, BODY, now=NOW)
    assert reason_of(excinfo) == reason
    assert reason in REASONS
    assert "\n" not in str(excinfo.value)


def test_rotation_accepts_any_listed_secret_and_any_listed_signature() -> None:
    old = sign(b"old-secret", NOW, BODY)
    verify([SECRET, b"old-secret"], str(NOW), old, BODY, now=NOW)
    both = f"{sign(b'other', NOW, BODY)}, {sign(SECRET, NOW, BODY)}"
    verify(SECRET, str(NOW), both, BODY, now=NOW)


def test_replay_cache_is_bounded_and_expires() -> None:
    cache = ReplayCache(maxsize=3, ttl_s=10)
    for i in range(5):
        assert cache.add(NOW + i, f"sig{i}", now=NOW)
    assert len(cache) == 3
    assert (NOW, "sig0") not in cache
    assert not cache.add(NOW + 4, "sig4", now=NOW + 1)
    assert cache.add(NOW + 4, "sig4", now=NOW + 20)  # expired, so new again
    assert len(cache) == 1
