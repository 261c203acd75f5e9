"""Send windows (streams/send_window.py): zones, campaign days, state rules, DST."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from streams.campaign import Campaign, load_campaign, parse_campaign
from streams.send_window import in_window, next_send_time
from streams.settings import REPO_ROOT

#: The example: 08:00-21:00 Monday to Saturday; FL 08:00-20:00, CT 09:00-21:00.
EXAMPLE = load_campaign(REPO_ROOT / "examples" / "campaign.yaml")
CHI, NYC, LA = "America/Chicago", "America/New_York", "America/Los_Angeles"


def campaign_with(**window: Any) -> Campaign:
    """The example campaign with ``send_window`` keys replaced (validated again)."""
    data = copy.deepcopy(EXAMPLE.to_dict())
    data["send_window"].update(window)
    return parse_campaign(data, source="test")


EVERY_DAY = campaign_with(days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"])


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- across zones ---------------------------------------------------------------------


def test_same_instant_is_open_in_one_zone_and_closed_in_another() -> None:
    at = utc(2026, 1, 5, 15, 30)  # Monday: 09:30 CST, 10:30 EST, 07:30 PST
    assert in_window(EXAMPLE, CHI, None, at)
    assert in_window(EXAMPLE, NYC, None, at)
    assert not in_window(EXAMPLE, LA, None, at)


def test_open_window_returns_the_instant_itself_in_utc() -> None:
    at = utc(2026, 1, 5, 15, 30)
    result = next_send_time(EXAMPLE, CHI, None, at)
    assert result == at
    assert result.tzinfo is UTC


def test_input_in_another_zone_is_returned_in_utc() -> None:
    at = utc(2026, 1, 5, 15, 30).astimezone(ZoneInfo("Asia/Kolkata"))
    result = next_send_time(EXAMPLE, CHI, None, at)
    assert result == at
    assert result.utcoffset() == timedelta(0)


def test_before_opening_moves_to_the_local_start() -> None:
    at = utc(2026, 1, 5, 15, 30)  # 07:30 in Los Angeles
    assert next_send_time(EXAMPLE, LA, None, at) == utc(2026, 1, 5, 16, 0)  # 08:00 PST


def test_start_is_inclusive_and_end_exclusive() -> None:
    assert in_window(EXAMPLE, CHI, None, utc(2026, 1, 5, 14, 0))  # 08:00 CST
    assert not in_window(EXAMPLE, CHI, None, utc(2026, 1, 5, 13, 59, 59))
    assert in_window(EXAMPLE, CHI, None, utc(2026, 1, 6, 2, 59, 59))  # 20:59:59 CST
    assert not in_window(EXAMPLE, CHI, None, utc(2026, 1, 6, 3, 0))  # 21:00 CST


def test_after_closing_moves_to_the_next_morning() -> None:
    at = utc(2026, 1, 6, 3, 0)  # Monday 21:00 CST
    assert next_send_time(EXAMPLE, CHI, None, at) == utc(2026, 1, 6, 14, 0)  # Tue 08:00 CST


def test_far_east_zone() -> None:
    # 2026-01-05 23:30 UTC is Tuesday 08:30 in Tokyo (+09:00, no DST)
    assert in_window(EXAMPLE, "Asia/Tokyo", None, utc(2026, 1, 5, 23, 30))
    assert not in_window(EXAMPLE, "Asia/Tokyo", None, utc(2026, 1, 5, 22, 30))


@pytest.mark.parametrize("zone", ["Mars/Base", "", "america/new_york"])
def test_invalid_zone_uses_the_default_zone(zone: str) -> None:
    """The default is New York: open at 08:30 EST, closed at 07:30 EST (12:30 UTC)."""
    assert in_window(EXAMPLE, zone, None, utc(2026, 1, 5, 13, 30))
    early = utc(2026, 1, 5, 12, 30)
    assert not in_window(EXAMPLE, zone, None, early)
    assert next_send_time(EXAMPLE, zone, None, early) == utc(2026, 1, 5, 13, 0)


# --- campaign days ---------------------------------------------------------------------


def test_saturday_is_open_in_the_example() -> None:
    assert in_window(EXAMPLE, CHI, None, utc(2026, 1, 10, 18, 0))  # Sat 12:00 CST


@pytest.mark.parametrize(
    "at",
    [
        utc(2026, 1, 11, 3, 30),  # Saturday 21:30 CST
        utc(2026, 1, 11, 18, 0),  # Sunday 12:00 CST
        utc(2026, 1, 12, 5, 59),  # Sunday 23:59 CST
    ],
)
def test_sunday_is_skipped_to_monday_morning(at: datetime) -> None:
    assert not in_window(EXAMPLE, CHI, None, at)
    assert next_send_time(EXAMPLE, CHI, None, at) == utc(2026, 1, 12, 14, 0)  # Mon 08:00 CST


def test_sunday_is_open_when_the_campaign_sends_every_day() -> None:
    assert in_window(EVERY_DAY, CHI, None, utc(2026, 1, 11, 18, 0))


def test_weekday_only_campaign_waits_over_the_weekend() -> None:
    weekdays = campaign_with(days=["mon", "tue", "wed", "thu", "fri"])
    at = utc(2026, 1, 9, 23, 0)  # Friday 17:00 CST: open
    assert next_send_time(weekdays, CHI, None, at) == at
    friday_night = utc(2026, 1, 10, 3, 0)  # Friday 21:00 CST
    assert next_send_time(weekdays, CHI, None, friday_night) == utc(2026, 1, 12, 14, 0)


def test_one_day_a_week_waits_up_to_a_week() -> None:
    mondays = campaign_with(days=["mon"])
    at = utc(2026, 1, 6, 3, 0)  # Monday 21:00 CST, just closed
    assert next_send_time(mondays, CHI, None, at) == utc(2026, 1, 12, 14, 0)


# --- state rules -------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["FL", "fl"])
def test_florida_closes_at_20(state: str) -> None:
    at = utc(2026, 1, 7, 1, 30)  # Tuesday 20:30 EST
    assert in_window(EXAMPLE, NYC, None, at)
    assert in_window(EXAMPLE, NYC, "NY", at)
    assert not in_window(EXAMPLE, NYC, state, at)
    assert next_send_time(EXAMPLE, NYC, state, at) == utc(2026, 1, 7, 13, 0)  # Wed 08:00 EST
    assert in_window(EXAMPLE, NYC, state, utc(2026, 1, 7, 0, 59))  # 19:59 EST


def test_connecticut_opens_at_9() -> None:
    at = utc(2026, 1, 6, 13, 30)  # Tuesday 08:30 EST
    assert in_window(EXAMPLE, NYC, None, at)
    assert not in_window(EXAMPLE, NYC, "CT", at)
    assert next_send_time(EXAMPLE, NYC, "CT", at) == utc(2026, 1, 6, 14, 0)  # 09:00 EST
    assert in_window(EXAMPLE, NYC, "CT", utc(2026, 1, 7, 1, 30))  # 20:30 EST: CT still open


def test_state_rule_applies_in_the_leads_own_zone() -> None:
    # a Florida panhandle lead on Central time: 20:00 is local, not Eastern
    assert in_window(EXAMPLE, CHI, "FL", utc(2026, 1, 7, 1, 30))  # 19:30 CST
    assert not in_window(EXAMPLE, CHI, "FL", utc(2026, 1, 7, 2, 0))  # 20:00 CST


def test_state_rules_are_built_in_without_a_states_section() -> None:
    data = copy.deepcopy(EXAMPLE.to_dict())
    del data["send_window"]["states"]
    campaign = parse_campaign(data, source="test")
    assert not in_window(campaign, NYC, "FL", utc(2026, 1, 7, 1, 30))  # 20:30 EST
    assert not in_window(campaign, NYC, "CT", utc(2026, 1, 6, 13, 30))  # 08:30 EST


def test_state_rule_can_drop_sunday() -> None:
    campaign = campaign_with(
        days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"], states={"OK": {"no_sunday": True}}
    )
    sunday_noon = utc(2026, 1, 11, 18, 0)
    assert in_window(campaign, CHI, "TX", sunday_noon)
    assert not in_window(campaign, CHI, "OK", sunday_noon)
    assert next_send_time(campaign, CHI, "OK", sunday_noon) == utc(2026, 1, 12, 14, 0)


@pytest.mark.parametrize("state", [None, "", "ZZ", "TX"])
def test_other_states_get_the_campaign_window(state: str | None) -> None:
    at = utc(2026, 1, 6, 14, 30)  # Tuesday 08:30 CST
    assert in_window(EXAMPLE, CHI, state, at)
    late = utc(2026, 1, 7, 2, 30)  # 20:30 CST
    assert in_window(EXAMPLE, CHI, state, late)


# --- daylight saving time --------------------------------------------------------------
# US DST starts Sunday 2026-03-08 (02:00 -> 03:00) and ends Sunday 2026-11-01 (02:00 -> 01:00).


def test_spring_forward_day_opens_at_8_local_daylight_time() -> None:
    at = utc(2026, 3, 8, 5, 0)  # 00:00 EST
    assert next_send_time(EVERY_DAY, NYC, None, at) == utc(2026, 3, 8, 12, 0)  # 08:00 EDT


def test_spring_forward_over_a_closed_sunday() -> None:
    at = utc(2026, 3, 8, 3, 0)  # Saturday 22:00 EST
    assert next_send_time(EXAMPLE, NYC, None, at) == utc(2026, 3, 9, 12, 0)  # Mon 08:00 EDT


def test_fall_back_day_opens_at_8_local_standard_time() -> None:
    at = utc(2026, 11, 1, 4, 30)  # 00:30 EDT
    assert next_send_time(EVERY_DAY, NYC, None, at) == utc(2026, 11, 1, 13, 0)  # 08:00 EST


def test_fall_back_over_a_closed_sunday() -> None:
    at = utc(2026, 11, 1, 1, 30)  # Saturday 21:30 EDT
    assert next_send_time(EXAMPLE, NYC, None, at) == utc(2026, 11, 2, 13, 0)  # Mon 08:00 EST


@pytest.mark.parametrize(
    ("at", "open_"),
    [
        (utc(2026, 3, 7, 12, 30), False),  # Sat 07:30 EST
        (utc(2026, 3, 9, 12, 30), True),  # Mon 08:30 EDT (same UTC clock, an hour later locally)
        (utc(2026, 10, 31, 12, 30), True),  # Sat 08:30 EDT
        (utc(2026, 11, 2, 12, 30), False),  # Mon 07:30 EST
    ],
)
def test_in_window_follows_the_utc_offset_change(at: datetime, open_: bool) -> None:
    assert in_window(EXAMPLE, NYC, None, at) is open_


def test_arizona_keeps_standard_time() -> None:
    # Phoenix stays at -07:00: 15:30 UTC is 08:30 all year
    assert in_window(EXAMPLE, "America/Phoenix", None, utc(2026, 1, 6, 15, 30))
    assert in_window(EXAMPLE, "America/Phoenix", None, utc(2026, 7, 7, 15, 30))
    assert not in_window(EXAMPLE, LA, None, utc(2026, 1, 6, 15, 30))  # 07:30 PST
    assert in_window(EXAMPLE, LA, None, utc(2026, 7, 7, 15, 30))  # 08:30 PDT


def test_european_dst_differs_from_us_dst() -> None:
    # 2026-03-16: New York already on EDT, London still on GMT
    at = utc(2026, 3, 16, 8, 0)
    assert in_window(EXAMPLE, "Europe/London", None, at)  # 08:00 GMT
    assert next_send_time(EXAMPLE, NYC, None, at) == utc(2026, 3, 16, 12, 0)  # 08:00 EDT


# --- properties over a grid --------------------------------------------------------------


@pytest.mark.parametrize("zone", [NYC, CHI, LA, "Pacific/Honolulu", "Europe/London"])
@pytest.mark.parametrize("state", [None, "FL", "CT"])
def test_next_send_time_is_the_earliest_open_moment(zone: str, state: str | None) -> None:
    """Across both DST changes: the answer is open, never earlier, and a start boundary."""
    starts = [utc(2026, 3, 5), utc(2026, 10, 29)]
    for start in starts:
        for step in range(0, 5 * 24 * 60, 47):  # five days, every 47 minutes
            at = start + timedelta(minutes=step)
            result = next_send_time(EXAMPLE, zone, state, at)
            assert result >= at
            assert in_window(EXAMPLE, zone, state, result)
            assert result - at < timedelta(days=2)  # at most one closed day in between
            if result != at:
                assert not in_window(EXAMPLE, zone, state, at)
                assert not in_window(EXAMPLE, zone, state, result - timedelta(seconds=1))
