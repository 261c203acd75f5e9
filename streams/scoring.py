"""The lead-scoring model: transparent points over the enrichment features.

A lead's score (0-100) is the sum of five parts; each part's points are
listed here and the reasons say which rule gave them, so anyone can see why
a lead scored what it did:

=================  ===============================================  ======
part               rule                                             points
=================  ===============================================  ======
seniority          c_level 30, vp 26, director 22, manager 15,      0-30
                   senior 10, entry 4, unknown 8
company size       11-200 staff 20, 201-1000 18, 2-10 12,           0-20
                   1001-5000 12, above 8, unknown 6
industry fit       target industries 15, others 6, unknown 4        0-15
revenue band       10M-50M, 50M-100M, 100M-500M: 10; 1M-10M: 7;     0-10
                   500M and above 6; <1M 3; unknown 3
reachability       valid phone 15, valid email 10                   0-25
=================  ===============================================  ======

Enrichment that found nothing scores the "unknown" points. The campaign's
qualification threshold and tiers then decide who is contacted and in what
order (:class:`streams.campaign.Qualification`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TARGET_INDUSTRIES", "Score", "score_lead"]

TARGET_INDUSTRIES = frozenset(
    {
        "software",
        "financial_services",
        "healthcare",
        "professional_services",
        "real_estate",
        "construction",
        "energy",
        "insurance",
    }
)
_SENIORITY = {"c_level": 30, "vp": 26, "director": 22, "manager": 15, "senior": 10, "entry": 4}
_REVENUE = {
    "10M-50M": 10,
    "50M-100M": 10,
    "100M-500M": 10,
    "1M-10M": 7,
    "500M-1B": 6,
    "1B+": 6,
    "<1M": 3,
}


@dataclass(frozen=True)
class Score:
    """A score and the rules that produced it."""

    value: float
    reasons: tuple[str, ...]


def _size_points(size: int | None) -> tuple[int, str]:
    if size is None:
        return 6, "size:unknown"
    if 11 <= size <= 200:
        return 20, "size:11-200"
    if 201 <= size <= 1000:
        return 18, "size:201-1000"
    if size <= 10:
        return 12, "size:2-10"
    if size <= 5000:
        return 12, "size:1001-5000"
    return 8, "size:5001+"


def score_lead(features: Mapping[str, Any]) -> Score:
    """Score one enriched lead (an ``EnrichedLead`` record or the same keys)."""
    reasons: list[str] = []
    seniority = features.get("seniority")
    points = _SENIORITY.get(str(seniority), 8)
    reasons.append(f"seniority:{seniority or 'unknown'}")
    size_points, size_reason = _size_points(features.get("company_size"))
    points += size_points
    reasons.append(size_reason)
    industry = features.get("industry")
    if industry is None:
        points += 4
        reasons.append("industry:unknown")
    elif industry in TARGET_INDUSTRIES:
        points += 15
        reasons.append("industry:target")
    else:
        points += 6
        reasons.append("industry:other")
    band = features.get("revenue_band")
    points += _REVENUE.get(str(band), 3)
    reasons.append(f"revenue:{band or 'unknown'}")
    if features.get("phone_e164"):
        points += 15
        reasons.append("reach:phone")
    if features.get("email"):
        points += 10
        reasons.append("reach:email")
    return Score(float(min(points, 100)), tuple(reasons))
