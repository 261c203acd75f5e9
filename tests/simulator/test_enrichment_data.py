"""simulator/enrichment_data.py: deterministic, varied, plausible firmographics."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from simulator.enrichment_data import NOT_FOUND_PERCENT, enrich_lead, timezone_for

COMPANIES = ["Acme Health", "Northwind Logistics", "Globex Software", "Initech", "Umbrella Bank"]


def lead(i: int) -> dict[str, str]:
    return {
        "key": f"lead-{i}",
        "email": f"person{i}@example{i % 50}.com",
        "phone": "+13125550123",
        "company": COMPANIES[i % len(COMPANIES)] + f" {i % 40}",
    }


def test_same_lead_same_answer() -> None:
    one = enrich_lead({"key": "k1", "company": "Acme Health", "phone": "+12125551234"})
    two = enrich_lead({"key": "k1", "company": "Acme Health", "phone": "+12125551234"})
    assert one == two
    assert one["key"] == "k1"


def test_answers_vary_and_are_plausible() -> None:
    results = [enrich_lead(lead(i)) for i in range(1000)]
    found = [r for r in results if r["found"]]
    not_found_share = 1 - len(found) / len(results)
    assert abs(not_found_share - NOT_FOUND_PERCENT / 100) < 0.03
    assert len({r["industry"] for r in found}) >= 6
    assert len({r["seniority"] for r in found}) == 6
    assert len({r["revenue_band"] for r in found}) >= 4
    sizes = [r["company_size"] for r in found]
    assert min(sizes) >= 1 and max(sizes) <= 50_000
    assert len(set(sizes)) >= 20
    assert all(r["linkedin_url"].startswith("https://www.linkedin.com/in/") for r in found)
    assert len({r["linkedin_url"] for r in found}) == len(found)
    assert set(found[0]) >= {
        "key", "found", "industry", "company_size", "seniority", "revenue_band", "timezone",
        "linkedin_url", "title",
    }  # fmt: skip


def test_colleagues_share_company_facts() -> None:
    people = [enrich_lead({"key": f"p{i}", "company": "Initech"}) for i in range(30)]
    found = [p for p in people if p["found"]]
    assert len({(p["industry"], p["company_size"], p["revenue_band"]) for p in found}) == 1
    assert len({p["seniority"] for p in found}) > 1


@pytest.mark.parametrize(
    ("title", "seniority"),
    [
        ("Director of Sales", "director"),
        ("CTO", "c_level"),
        ("VP, Marketing", "vp"),
        ("Sr. Account Executive", "senior"),
        ("Marketing Coordinator", "entry"),
    ],
)
def test_seniority_comes_from_the_title(title: str, seniority: str) -> None:
    keys = (f"t{i}" for i in range(100))
    result = next(r for r in (enrich_lead({"key": k, "title": title}) for k in keys) if r["found"])
    assert result["seniority"] == seniority
    assert result["title"] == title


@pytest.mark.parametrize(
    ("phone", "state", "country", "zone"),
    [
        ("+13125550123", None, None, "America/Chicago"),
        ("+12125551234", None, None, "America/New_York"),
        ("+14155550100", "NY", None, "America/Los_Angeles"),  # area code wins
        ("+18005550100", "TX", None, "America/Chicago"),  # toll-free: fall back to state
        (None, "AZ", "US", "America/Phoenix"),
        ("+447911123456", None, None, "Europe/London"),
        (None, None, "DE", "Europe/Berlin"),
    ],
)
def test_timezone_follows_phone_then_state_then_country(
    phone: str | None, state: str | None, country: str | None, zone: str
) -> None:
    assert timezone_for(phone, state, country, random.Random(0)) == zone


def test_unknown_location_still_gets_a_us_zone_spread() -> None:
    rng = random.Random(1)
    zones = Counter(timezone_for(None, None, None, rng) for _ in range(300))
    assert zones.most_common(1)[0][0] == "America/New_York"
    assert len(zones) >= 4
