"""Phone and email normalisation and identities."""

from __future__ import annotations

import pytest

from streams.contact import (
    contact_hash,
    identity_key,
    normalize_email,
    normalize_phone,
    phone_timezones,
)


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("(512) 867-5309", "US", "+15128675309"),
        ("512.867.5309", None, "+15128675309"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("12345", "US", None),
        ("1234567890123456", "US", None),  # 16 digits
        ("", "US", None),
        (None, None, None),
        ("call me", "US", None),
        ("5" * 40, "US", None),
    ],
)
def test_normalize_phone(raw: str | None, country: str | None, expected: str | None) -> None:
    assert normalize_phone(raw, country) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ana.Nguyen@Example.COM ", "ana.nguyen@example.com"),
        ("not-an-email", None),
        ("a@b", None),
        ("two@@example.com", None),
        ("", None),
    ],
)
def test_normalize_email(raw: str, expected: str | None) -> None:
    assert normalize_email(raw) == expected


def test_identity_prefers_phone_and_hides_the_contact() -> None:
    key = identity_key("+15128675309", "x@example.com")
    assert key == contact_hash("phone", "+15128675309")
    assert key is not None and "5128675309" not in key and len(key) == 64
    assert identity_key(None, "x@example.com") == contact_hash("email", "x@example.com")
    assert identity_key(None, None) is None


def test_phone_timezone_for_a_texas_number() -> None:
    assert "America/Chicago" in phone_timezones("+15128675309")
