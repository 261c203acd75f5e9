"""A lead's time zone: given, enriched, from the phone number, or from the US state."""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.contact import phone_timezones

__all__ = ["DEFAULT_TIMEZONE", "STATE_TIMEZONES", "resolve_timezone", "valid_timezone"]

#: Used only when nothing about the lead says where it is.
DEFAULT_TIMEZONE = "America/New_York"

#: The main zone of each US state (states spanning zones use the larger part).
STATE_TIMEZONES: dict[str, str] = {
    **dict.fromkeys(
        [
            "CT",
            "DE",
            "DC",
            "FL",
            "GA",
            "IN",
            "KY",
            "ME",
            "MD",
            "MA",
            "MI",
            "NH",
            "NJ",
            "NY",
            "NC",
            "OH",
            "PA",
            "RI",
            "SC",
            "VT",
            "VA",
            "WV",
        ],
        "America/New_York",
    ),
    **dict.fromkeys(
        [
            "AL",
            "AR",
            "IL",
            "IA",
            "KS",
            "LA",
            "MN",
            "MS",
            "MO",
            "NE",
            "ND",
            "OK",
            "SD",
            "TN",
            "TX",
            "WI",
        ],
        "America/Chicago",
    ),
    **dict.fromkeys(["CO", "ID", "MT", "NM", "UT", "WY"], "America/Denver"),
    "AZ": "America/Phoenix",
    **dict.fromkeys(["CA", "NV", "OR", "WA"], "America/Los_Angeles"),
    "AK": "America/Anchorage",
    "HI": "Pacific/Honolulu",
}


@lru_cache(maxsize=1024)
def valid_timezone(name: str | None) -> str | None:
    """``name`` when it is a known IANA zone, else None."""
    if not name or len(name) > 64:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return name


def resolve_timezone(
    given: str | None, enriched: str | None, phone_e164: str | None, state: str | None
) -> str:
    """The best zone for a lead, in order: given, US state, phone number, enrichment, default.

    The state comes before the phone because people keep their numbers when
    they move; a number covering several zones is only used when it has one.
    """
    for candidate in (given, STATE_TIMEZONES.get((state or "").strip().upper())):
        zone = valid_timezone(candidate)
        if zone:
            return zone
    if phone_e164:
        zones = phone_timezones(phone_e164)
        if len(zones) == 1 and valid_timezone(zones[0]):
            return zones[0]
    return valid_timezone(enriched) or DEFAULT_TIMEZONE
