"""Helpers of the end-to-end tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from streams.campaign import Campaign, load_campaign
from streams.settings import REPO_ROOT


def _example_campaign(prefix: str, *, gap: timedelta | None = None) -> Campaign:
    """``examples/campaign.yaml`` under a fresh id.

    ``gap`` replaces the delay of every touch after the first: the example's
    week-long sequence is 30 s of wall time at the tests' clock scale of
    20,000, and a test about restarts or logs does not need the week.
    """
    campaign = replace(
        load_campaign(REPO_ROOT / "examples" / "campaign.yaml"),
        id=f"{prefix}-{uuid.uuid4().hex[:8]}",
    )
    if gap is None:
        return campaign
    sequence = tuple(
        replace(touch, delay=gap) if touch.index > 1 else touch for touch in campaign.sequence
    )
    return replace(campaign, sequence=sequence)


@pytest.fixture
def example_campaign() -> Callable[..., Campaign]:
    """``example_campaign(prefix, gap=None)``: the example campaign under a fresh id."""
    return _example_campaign
