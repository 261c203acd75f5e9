"""A campaign's own channel rate and daily cap, on the campaign clock (agents/schedule.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from agents.schedule import CampaignLimits
from streams.campaign import ChannelSettings, load_campaign
from streams.settings import REPO_ROOT

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)


def campaign(rate: str | None, daily_cap: int | None) -> object:
    base = load_campaign(REPO_ROOT / "examples" / "campaign.yaml")
    channels = {**base.channels, "sms": ChannelSettings("http", rate, daily_cap)}
    return replace(base, id="lim", channels=channels)


def takes(limits: CampaignLimits, c: object, n: int, share: float = 1.0) -> int:
    return sum(limits.take(c, "sms", share, NOW) for _ in range(n))  # type: ignore[arg-type]


def test_the_daily_cap_stops_sends_until_the_next_campaign_day() -> None:
    c = campaign(None, 5)
    limits = CampaignLimits(time_scale=1.0)
    assert takes(limits, c, 8) == 5
    assert limits.exhausted("sms", NOW) == ["lim"]
    tomorrow = NOW + timedelta(days=1)
    assert limits.exhausted("sms", tomorrow) == []
    assert limits.take(c, "sms", 1.0, tomorrow)  # type: ignore[arg-type]


def test_a_worker_takes_its_share_of_the_daily_cap() -> None:
    assert takes(CampaignLimits(1.0), campaign(None, 100), 100, share=0.25) == 25


def test_the_rate_allows_a_burst_of_one_window_then_refills_on_the_scaled_clock() -> None:
    c = campaign("10/60", None)
    slow = CampaignLimits(time_scale=1.0)
    assert takes(slow, c, 50) <= 11  # one window's worth (plus the starting token), not 50
    fast = CampaignLimits(time_scale=1_000_000.0)  # a minute of campaign time passes at once
    assert takes(fast, c, 50) > 11


def test_no_limits_means_every_send_is_allowed() -> None:
    assert takes(CampaignLimits(1.0), campaign(None, None), 1000) == 1000
