"""Contact normalisation and identity: E.164 phones, normalised emails, hashed identities.

Used by ingestion (to reject rows with no usable contact) and by the enrich
stage (to normalise and deduplicate). Identities are SHA-256 hashes, so they
can be stored, logged as ids and compared without exposing the contact.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

import phonenumbers
from phonenumbers import timezone as phone_timezone

__all__ = [
    "contact_hash",
    "identity_key",
    "normalize_email",
    "normalize_phone",
    "phone_timezones",
]

# Deliberately plain: one @, a dot in the domain, no spaces. Deliverability is
# the provider's call (bounces come back as webhooks).
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")
#: Longest accepted raw phone text; anything longer is not a phone number.
MAX_PHONE_CHARS = 32


def normalize_phone(raw: str | None, country: str | None = None) -> str | None:
    """``raw`` as E.164 (``+15125550100``) when it is a valid number, else None.

    ``country`` (ISO 3166-1 alpha-2) is the region for numbers written without
    a ``+`` prefix; US when absent or not a 2-letter code.
    """
    if not raw:
        return None
    text = raw.strip()
    if not text or len(text) > MAX_PHONE_CHARS:
        return None
    region = country.upper() if country and _COUNTRY.match(country) else "US"
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str | None) -> str | None:
    """Lower-cased, trimmed email when it looks like an address, else None."""
    if not raw:
        return None
    text = raw.strip().lower()
    if len(text) > 254 or not _EMAIL.match(text):
        return None
    return text


def contact_hash(kind: str, value: str) -> str:
    """Stable SHA-256 hex of one normalised contact (``kind`` is phone or email)."""
    return hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()


def identity_key(phone_e164: str | None, email: str | None) -> str | None:
    """The lead's identity for deduplication: its phone if valid, else its email.

    Two rows with the same normalised phone (or, lacking phones, the same
    email) are the same person.
    """
    if phone_e164:
        return contact_hash("phone", phone_e164)
    if email:
        return contact_hash("email", email)
    return None


@lru_cache(maxsize=4096)
def phone_timezones(phone_e164: str) -> tuple[str, ...]:
    """IANA time zones phonenumbers associates with a number ('' entries removed)."""
    try:
        number = phonenumbers.parse(phone_e164, None)
    except phonenumbers.NumberParseException:
        return ()
    zones = phone_timezone.time_zones_for_number(number)
    return tuple(z for z in zones if z and z != "Etc/Unknown")
