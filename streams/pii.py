"""Masking personal data (phone numbers, emails, names) for tools that print records.

``leadflow tail`` uses it, and so can any tool that shows records or logs to
an operator (``dlq show``, log views). Two rules apply together:

- **By field name.** A field whose name says phone (``phone``,
  ``phone_e164``, ``to_phone``, ``mobile``, ...), email (``email``,
  ``to_email``, ...) or person name (``first_name``, ``last_name``,
  ``full_name``, ...) is masked whatever its value looks like. Keys of maps
  (a lead's ``attributes``) count as field names.
- **By value.** Every other string is scanned for text that looks like an
  email address or a phone number (reply bodies, attribute values, error
  messages), and each one found is masked in place.

What masked values look like::

    +14155554567          -> +1***4567      (country code + last 4 digits)
    (415) 555-4567        -> ***4567
    jane.doe@example.com  -> j***@example.com
    Jane                  -> J***

Phone numbers keep their country code and their last 4 digits (the last 2
when the national number is shorter than 8 digits); the area code is hidden
too, so at least 6 digits of a North American number stay unknown. Names
cannot be recognised in free text; only name fields are masked.

Masking is for display: it never changes what is stored or sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

import phonenumbers

__all__ = [
    "MASK",
    "PiiKind",
    "field_kind",
    "looks_like_pii",
    "mask",
    "mask_email",
    "mask_name",
    "mask_phone",
    "mask_text",
]

#: What stands in for the hidden part of a value.
MASK: Final = "***"


class PiiKind(StrEnum):
    """The kinds of personal data that are masked."""

    PHONE = "phone"
    EMAIL = "email"
    NAME = "name"


_PHONE_WORDS: Final = frozenset(
    {"phone", "mobile", "cell", "cellphone", "tel", "telephone", "msisdn", "fax"}
)
_EMAIL_WORDS: Final = frozenset({"email", "mail"})
_NAME_FIELDS: Final = frozenset(
    {
        "first_name",
        "last_name",
        "middle_name",
        "full_name",
        "given_name",
        "family_name",
        "contact_name",
        "firstname",
        "lastname",
        "fullname",
    }
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def field_kind(name: str) -> PiiKind | None:
    """The kind of personal data a field called ``name`` holds, if any.

    ``phone_e164``, ``toPhone``, ``work-email`` and ``FirstName`` are
    recognised; ``phone_count`` is too (a false positive is only an
    over-masked number).
    """
    snake = _CAMEL.sub("_", name).lower().replace("-", "_").replace(" ", "_")
    if snake in _NAME_FIELDS:
        return PiiKind.NAME
    words = set(snake.split("_"))
    if words & _EMAIL_WORDS or "e_mail" in snake:
        return PiiKind.EMAIL
    if words & _PHONE_WORDS:
        return PiiKind.PHONE
    return None


def _is_identifier(name: str) -> bool:
    snake = _CAMEL.sub("_", name).lower()
    return snake == "id" or snake.endswith(("_id", "_ids", "_key"))


# --- one value -----------------------------------------------------------------


def mask_phone(value: str) -> str:
    """``+14155554567`` -> ``+1***4567``; a number without ``+`` keeps only its last digits."""
    digits = re.sub(r"\D", "", value)
    if len(digits) < 4:
        return MASK
    head = ""
    national = digits
    if value.lstrip().startswith("+"):
        code = _country_code(digits)
        head = f"+{code}"
        national = digits[len(code) :]
    keep = 4 if len(national) >= 8 else 2
    return f"{head}{MASK}{national[-keep:]}"


def _country_code(digits: str) -> str:
    try:
        code = phonenumbers.parse("+" + digits, None).country_code
    except phonenumbers.NumberParseException:
        code = None
    if code:
        return str(code)
    return digits[:1]  # unknown: show as little as possible


def mask_email(value: str) -> str:
    """``jane.doe@example.com`` -> ``j***@example.com`` (no ``@``: masked like a name)."""
    local, at, domain = value.strip().rpartition("@")
    if not at:
        return mask_name(value)
    return f"{local[:1]}{MASK}@{domain}"


def mask_name(value: str) -> str:
    """``Jane`` -> ``J***``; empty stays empty."""
    text = value.strip()
    return f"{text[:1]}{MASK}" if text else value


_MASKERS: Final = {
    PiiKind.PHONE: mask_phone,
    PiiKind.EMAIL: mask_email,
    PiiKind.NAME: mask_name,
}


# --- free text -----------------------------------------------------------------

_EMAIL_IN_TEXT: Final = re.compile(
    r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
)
#: A run of digits with the usual phone punctuation, not inside a word, id or path.
_PHONE_IN_TEXT: Final = re.compile(r"(?<![\w\-/:.+])(?:\+\s?)?\(?\d[\d\s().\-]*\d(?![\w\-/:])")
#: Digit runs that are not phone numbers: dates, decimals, IPv4 addresses.
_NOT_PHONE: Final = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d+\.\d+|\d{1,3}(?:\.\d{1,3}){3}")


def _phone_match(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    if not 7 <= digits <= 15:
        return False
    if _NOT_PHONE.fullmatch(text):
        return False
    formatted = text.lstrip().startswith("+") or not text.isdigit()
    # A bare digit run is a phone number only at national length or more;
    # shorter runs are counts and amounts.
    return formatted or digits >= 10


def mask_text(text: str, *, phones: bool = True) -> str:
    """``text`` with every email address (and, unless ``phones`` is false, phone number) masked."""
    if not text:
        return text
    out = _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)), text)
    if not phones:
        return out
    return _PHONE_IN_TEXT.sub(
        lambda m: mask_phone(m.group(0)) if _phone_match(m.group(0)) else m.group(0), out
    )


def looks_like_pii(text: str) -> bool:
    """True when ``text`` holds something that looks like an email or phone number."""
    if _EMAIL_IN_TEXT.search(text):
        return True
    return any(_phone_match(m.group(0)) for m in _PHONE_IN_TEXT.finditer(text))


# --- records -------------------------------------------------------------------


def mask(value: Any, field: str | None = None) -> Any:
    """A copy of ``value`` (a record, map, list or scalar) with personal data masked.

    ``field`` is the name ``value`` is stored under, if any. Strings in PII
    fields are masked as their kind (lists of them too, and numbers in phone
    fields); other strings go through :func:`mask_text` (identifier fields,
    named ``*_id``, ``id`` or ``*_key``, for email addresses only); mappings
    and lists are walked; anything else (bytes, numbers, times, None) is
    returned as is.
    """
    kind = field_kind(field) if field else None
    if isinstance(value, str):
        if kind:
            return _MASKERS[kind](value)
        # Ids and keys (lead_id, event_id, identity_key) may be long digit runs:
        # only an email address in one is masked.
        return mask_text(value, phones=not (field and _is_identifier(field)))
    if isinstance(value, Mapping):
        return {k: mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v, field) for v in value]
    if kind is PiiKind.PHONE and isinstance(value, int) and not isinstance(value, bool):
        return mask_phone(str(value))
    return value
