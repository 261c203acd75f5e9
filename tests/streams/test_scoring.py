"""The lead-scoring model (streams/scoring.py): every rule's points, reasons, unknowns, the cap."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from streams import scoring
from streams.scoring import TARGET_INDUSTRIES, Score, score_lead

#: Points of a lead enrichment knows nothing about: seniority 8 + size 6 + industry 4 + revenue 3.
UNKNOWN_TOTAL = 8 + 6 + 4 + 3
UNKNOWN_REASONS = ("seniority:unknown", "size:unknown", "industry:unknown", "revenue:unknown")


def points_with(**features: Any) -> float:
    """Score of a lead that is unknown except for ``features``."""
    return score_lead(features).value


def test_nothing_known_scores_the_unknown_points() -> None:
    score = score_lead({})
    assert score == Score(float(UNKNOWN_TOTAL), UNKNOWN_REASONS)
    explicit_none = {
        "seniority": None,
        "company_size": None,
        "industry": None,
        "revenue_band": None,
        "phone_e164": None,
        "email": None,
    }
    assert score_lead(explicit_none) == score


@pytest.mark.parametrize(
    ("seniority", "points"),
    [
        ("c_level", 30),
        ("vp", 26),
        ("director", 22),
        ("manager", 15),
        ("senior", 10),
        ("entry", 4),
        (None, 8),
        ("", 8),
        ("intern", 8),  # a value the model does not know scores like unknown
    ],
)
def test_seniority_points(seniority: str | None, points: int) -> None:
    assert points_with(seniority=seniority) == UNKNOWN_TOTAL - 8 + points


@pytest.mark.parametrize(
    ("seniority", "reason"),
    [("vp", "seniority:vp"), (None, "seniority:unknown"), ("", "seniority:unknown")],
)
def test_seniority_reason(seniority: str | None, reason: str) -> None:
    assert score_lead({"seniority": seniority}).reasons[0] == reason


@pytest.mark.parametrize(
    ("size", "points", "reason"),
    [
        (None, 6, "size:unknown"),
        (2, 12, "size:2-10"),
        (10, 12, "size:2-10"),
        (11, 20, "size:11-200"),
        (200, 20, "size:11-200"),
        (201, 18, "size:201-1000"),
        (1000, 18, "size:201-1000"),
        (1001, 12, "size:1001-5000"),
        (5000, 12, "size:1001-5000"),
        (5001, 8, "size:5001+"),
        (250_000, 8, "size:5001+"),
    ],
)
def test_company_size_points_at_every_boundary(size: int | None, points: int, reason: str) -> None:
    score = score_lead({"company_size": size})
    assert score.value == UNKNOWN_TOTAL - 6 + points
    assert score.reasons[1] == reason


@pytest.mark.parametrize("industry", sorted(TARGET_INDUSTRIES))
def test_target_industries_score_15(industry: str) -> None:
    score = score_lead({"industry": industry})
    assert score.value == UNKNOWN_TOTAL - 4 + 15
    assert score.reasons[2] == "industry:target"


@pytest.mark.parametrize("industry", ["retail", "education", "hospitality", "Software"])
def test_other_industries_score_6(industry: str) -> None:
    score = score_lead({"industry": industry})
    assert score.value == UNKNOWN_TOTAL - 4 + 6
    assert score.reasons[2] == "industry:other"


def test_target_industries_are_the_documented_eight() -> None:
    assert {
        "software",
        "financial_services",
        "healthcare",
        "professional_services",
        "real_estate",
        "construction",
        "energy",
        "insurance",
    } == TARGET_INDUSTRIES


@pytest.mark.parametrize(
    ("band", "points"),
    [
        ("10M-50M", 10),
        ("50M-100M", 10),
        ("100M-500M", 10),
        ("1M-10M", 7),
        ("500M-1B", 6),
        ("1B+", 6),
        ("<1M", 3),
        (None, 3),
        ("", 3),
        ("lots", 3),
    ],
)
def test_revenue_band_points(band: str | None, points: int) -> None:
    score = score_lead({"revenue_band": band})
    assert score.value == UNKNOWN_TOTAL - 3 + points
    if band != "lots":  # what an unrecognised band's reason says is not pinned here
        assert score.reasons[3] == (f"revenue:{band}" if band else "revenue:unknown")


@pytest.mark.parametrize(
    ("phone", "email", "points", "reasons"),
    [
        ("+15125550100", None, 15, ("reach:phone",)),
        (None, "ann@example.com", 10, ("reach:email",)),
        ("+15125550100", "ann@example.com", 25, ("reach:phone", "reach:email")),
        ("", "", 0, ()),
        (None, None, 0, ()),
    ],
)
def test_reachability_points(
    phone: str | None, email: str | None, points: int, reasons: tuple[str, ...]
) -> None:
    score = score_lead({"phone_e164": phone, "email": email})
    assert score.value == UNKNOWN_TOTAL + points
    assert score.reasons[4:] == reasons


def test_best_lead_scores_exactly_100() -> None:
    best = {
        "seniority": "c_level",
        "company_size": 50,
        "industry": "software",
        "revenue_band": "10M-50M",
        "phone_e164": "+15125550100",
        "email": "ceo@example.com",
    }
    score = score_lead(best)
    assert score.value == 100.0
    assert score.reasons == (
        "seniority:c_level",
        "size:11-200",
        "industry:target",
        "revenue:10M-50M",
        "reach:phone",
        "reach:email",
    )


def test_score_is_capped_at_100(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(scoring._SENIORITY, "c_level", 60)
    score = score_lead(
        {"seniority": "c_level", "company_size": 50, "phone_e164": "+1", "email": "a@b.co"}
    )
    assert score.value == 100.0


def test_every_combination_stays_within_0_and_100_and_is_a_float() -> None:
    seniorities = [None, "c_level", "vp", "director", "manager", "senior", "entry", "other"]
    sizes = [None, 1, 5, 50, 500, 2000, 9000]
    industries = [None, "software", "retail"]
    bands = [None, "10M-50M", "1M-10M", "1B+", "<1M"]
    reach = [(None, None), ("+15125550100", None), (None, "a@b.co"), ("+15125550100", "a@b.co")]
    seen = set()
    for sen, size, ind, band, (phone, email) in itertools.product(
        seniorities, sizes, industries, bands, reach
    ):
        score = score_lead(
            {
                "seniority": sen,
                "company_size": size,
                "industry": ind,
                "revenue_band": band,
                "phone_e164": phone,
                "email": email,
            }
        )
        assert isinstance(score.value, float)
        assert 0.0 <= score.value <= 100.0
        assert len(score.reasons) in (4, 5, 6)
        seen.add(score.value)
    assert min(seen) == 4 + 6 + 4 + 3  # entry, unknown size, unknown industry, <1M revenue
    assert max(seen) == 100.0


def test_extra_fields_are_ignored() -> None:
    assert score_lead({"title": "CEO", "company": "Acme", "timezone": "UTC"}) == score_lead({})


def test_every_documented_provider_value_has_its_own_points() -> None:
    """docs/PROVIDER-API.md lists the values the enrichment provider answers with."""
    for seniority in ("c_level", "vp", "director", "manager", "senior", "entry"):
        assert points_with(seniority=seniority) != UNKNOWN_TOTAL
    for band in ("1M-10M", "10M-50M", "50M-100M", "100M-500M", "500M-1B", "1B+"):
        assert points_with(revenue_band=band) != UNKNOWN_TOTAL
    assert points_with(revenue_band="<1M") == UNKNOWN_TOTAL  # <1M scores like unknown: 3
