"""A lead's time zone (streams/timezones.py): precedence and invalid names."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from streams.campaign import US_STATES
from streams.timezones import DEFAULT_TIMEZONE, STATE_TIMEZONES, resolve_timezone, valid_timezone

AUSTIN = "+15125550100"  # one zone: America/Chicago
SEATTLE = "+12065550100"  # one zone: America/Los_Angeles
LONDON = "+442071234567"  # one zone: Europe/London
TOLL_FREE = "+18005550100"  # many zones
ALASKA = "+19075550100"  # two zones (Adak, Anchorage)


# --- precedence: given > state > single phone zone > enrichment > default ---------------


def test_given_zone_wins_over_everything() -> None:
    zone = resolve_timezone("America/Denver", "America/Los_Angeles", AUSTIN, "NY")
    assert zone == "America/Denver"


def test_state_comes_before_phone_and_enrichment() -> None:
    assert resolve_timezone(None, "America/Denver", SEATTLE, "NY") == "America/New_York"


def test_single_phone_zone_comes_before_enrichment() -> None:
    assert resolve_timezone(None, "America/Denver", SEATTLE, None) == "America/Los_Angeles"
    assert resolve_timezone(None, "America/Denver", LONDON, None) == "Europe/London"


@pytest.mark.parametrize("phone", [TOLL_FREE, ALASKA, "not a phone", "+1", ""])
def test_phone_without_exactly_one_zone_falls_to_enrichment(phone: str) -> None:
    assert resolve_timezone(None, "America/Denver", phone, None) == "America/Denver"


def test_default_when_nothing_is_known() -> None:
    assert resolve_timezone(None, None, None, None) == DEFAULT_TIMEZONE == "America/New_York"
    assert resolve_timezone(None, None, TOLL_FREE, None) == DEFAULT_TIMEZONE


# --- invalid inputs fall through to the next source -------------------------------------


@pytest.mark.parametrize(
    "given", ["", "Mars/Olympus_Mons", "america/chicago", "../../etc/passwd", "/etc/localtime"]
)
def test_invalid_given_zone_falls_to_state(given: str) -> None:
    assert resolve_timezone(given, None, None, "TX") == "America/Chicago"


@pytest.mark.parametrize("state", ["tx", " TX ", "Tx"])
def test_state_is_matched_case_and_space_insensitively(state: str) -> None:
    assert resolve_timezone(None, None, SEATTLE, state) == "America/Chicago"


@pytest.mark.parametrize("state", ["ZZ", "Texas", "", None])
def test_unknown_state_falls_to_phone(state: str | None) -> None:
    assert resolve_timezone(None, None, SEATTLE, state) == "America/Los_Angeles"


def test_invalid_enrichment_zone_falls_to_default() -> None:
    assert resolve_timezone(None, "Nowhere/City", TOLL_FREE, "ZZ") == DEFAULT_TIMEZONE


@pytest.mark.parametrize(
    ("state", "zone"),
    [
        ("NY", "America/New_York"),
        ("FL", "America/New_York"),
        ("CT", "America/New_York"),
        ("TX", "America/Chicago"),
        ("IL", "America/Chicago"),
        ("CO", "America/Denver"),
        ("AZ", "America/Phoenix"),
        ("CA", "America/Los_Angeles"),
        ("AK", "America/Anchorage"),
        ("HI", "Pacific/Honolulu"),
        ("DC", "America/New_York"),
    ],
)
def test_state_zones(state: str, zone: str) -> None:
    assert resolve_timezone(None, None, None, state) == zone


def test_every_state_zone_is_valid_and_every_state_and_dc_is_mapped() -> None:
    for zone in set(STATE_TIMEZONES.values()):
        ZoneInfo(zone)
        assert valid_timezone(zone) == zone
    assert set(STATE_TIMEZONES) <= US_STATES
    assert len(STATE_TIMEZONES) == 51  # 50 states + DC


# --- valid_timezone ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["America/Chicago", "Europe/London", "Pacific/Honolulu", "UTC", "America/Phoenix"]
)
def test_valid_timezone_accepts_iana_names(name: str) -> None:
    assert valid_timezone(name) == name


@pytest.mark.parametrize(
    "name",
    [
        None,
        "",
        "Mars/Olympus_Mons",
        "America/Chicago ",
        "america/chicago",
        "../../etc/passwd",
        "/etc/localtime",
        "Europe/London\x00",
    ],
)
def test_valid_timezone_refuses_other_names(name: str | None) -> None:
    assert valid_timezone(name) is None


def test_overlong_names_are_refused_without_a_lookup(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    looked_up: list[str] = []

    def fake_zoneinfo(name: str) -> object:
        looked_up.append(name)
        return object()

    monkeypatch.setattr("streams.timezones.ZoneInfo", fake_zoneinfo)
    request.addfinalizer(valid_timezone.cache_clear)  # forget what the fake "found"
    long_name = "America/" + "X" * 57  # 65 characters (not cached by an earlier call)
    assert valid_timezone(long_name) is None
    assert looked_up == []
    fits = "America/" + "Y" * 56  # 64 characters: looked up (and "found" by the fake)
    assert valid_timezone(fits) == fits
    assert looked_up == [fits]
