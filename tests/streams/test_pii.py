"""Masking phone numbers, emails and names for display."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.pii import (
    PiiKind,
    field_kind,
    looks_like_pii,
    mask,
    mask_email,
    mask_name,
    mask_phone,
    mask_text,
)


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+14155554567", "+1***4567"),  # country code and last 4; area code hidden
        ("+1 (415) 555-4567", "+1***4567"),
        ("+447700900123", "+44***0123"),
        ("+35312345678", "+353***5678"),
        ("(415) 555-4567", "***4567"),  # no country code to keep
        ("+4930123", "+49***23"),  # short national number: last 2
        ("12", "***"),
        ("", "***"),
    ],
)
def test_phone(raw: str, masked: str) -> None:
    assert mask_phone(raw) == masked


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("jane.doe@example.com", "j***@example.com"),
        ("  J@x.io ", "J***@x.io"),
        ("@example.com", "***@example.com"),
        ("not-an-email", "n***"),
    ],
)
def test_email(raw: str, masked: str) -> None:
    assert mask_email(raw) == masked


def test_name() -> None:
    assert mask_name("Jane") == "J***"
    assert mask_name(" Zoë ") == "Z***"
    assert mask_name("") == ""


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("phone", PiiKind.PHONE),
        ("phone_e164", PiiKind.PHONE),
        ("to_phone", PiiKind.PHONE),
        ("toPhone", PiiKind.PHONE),
        ("Mobile", PiiKind.PHONE),
        ("cell", PiiKind.PHONE),
        ("email", PiiKind.EMAIL),
        ("to_email", PiiKind.EMAIL),
        ("work-email", PiiKind.EMAIL),
        ("E-Mail", PiiKind.EMAIL),
        ("first_name", PiiKind.NAME),
        ("LastName", PiiKind.NAME),
        ("full_name", PiiKind.NAME),
        ("lead_id", None),
        ("company", None),
        ("identity_key", None),
        ("cancelled", None),
        ("name", None),  # too general (logger names, campaign names)
    ],
)
def test_field_kind(name: str, kind: PiiKind | None) -> None:
    assert field_kind(name) is kind


def test_free_text_masks_emails_and_phones_in_place() -> None:
    text = "Call me at +1 (415) 555-4567 or 415.555.1234, or write to jane.doe@example.com!"
    assert mask_text(text) == "Call me at +1***4567 or ***1234, or write to j***@example.com!"


@pytest.mark.parametrize(
    "text",
    [
        "sent 2026-11-26T15:30:00.000Z",
        "on 2026-11-26 at 10.0.0.12",
        "score 12345.678 of 1234567 leads",  # decimals, short bare numbers
        "lead-0000012345 and order_4155554567",  # inside ids
        "idempotency lf1-ccddb409e49a7671097665cfa26ee6d8",
        "Sounds good, call me Tuesday",
    ],
)
def test_free_text_leaves_dates_numbers_and_ids_alone(text: str) -> None:
    assert mask_text(text) == text
    assert not looks_like_pii(text)


def test_a_bare_digit_run_of_phone_length_is_masked() -> None:
    assert mask_text("my number 4155554567 thanks") == "my number ***4567 thanks"
    assert looks_like_pii("my number 4155554567")
    assert looks_like_pii("x jane@example.com y")


def test_mask_walks_records_by_field_name_and_by_value() -> None:
    when = datetime(2026, 11, 26, tzinfo=UTC)
    record = {
        "lead_id": "4155554567",  # an id: digit runs stay, it is not a phone field
        "first_name": "Jane",
        "last_name": None,
        "email": "jane@example.com",
        "phone_e164": "+14155554567",
        "attributes": {"mobile": "415 555 0000", "notes": "ping jane@corp.example", "size": "250"},
        "body": "reach me on +44 7700 900123",
        "reasons": ["title_match"],
        "emails": ["a@b.io", "c@d.io"],
        "phone_numbers": [4155554567],
        "event_time": when,
        "payload": b"jane@example.com",
        "score": 88.5,
        "external_id": "jane@example.com",
    }
    masked = mask(record)
    assert masked == {
        "lead_id": "4155554567",
        "first_name": "J***",
        "last_name": None,
        "email": "j***@example.com",
        "phone_e164": "+1***4567",
        "attributes": {"mobile": "***0000", "notes": "ping j***@corp.example", "size": "250"},
        "body": "reach me on +44***0123",
        "reasons": ["title_match"],
        "emails": ["a***@b.io", "c***@d.io"],
        "phone_numbers": ["***4567"],
        "event_time": when,
        "payload": b"jane@example.com",  # bytes are the caller's to handle
        "score": 88.5,
        "external_id": "j***@example.com",  # ids are still checked for emails
    }
    assert record["first_name"] == "Jane"  # the input is not changed
