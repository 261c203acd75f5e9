"""Deterministic, plausible fake firmographics for the enrichment endpoint.

Everything is derived from a SHA-256 of the lead's fields, so the same lead
always gets the same answer, in any process, whatever the simulator's seed.
Company-level facts (industry, size, revenue band) are seeded by the company
name alone, so colleagues at one company agree. Person-level facts (found,
seniority, title, function) are seeded by the lead. The timezone follows the
phone number's area code where that pins one down, then the US/Canadian state
or province, then the country. About 8 % of leads are ``found: false``.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import phonenumbers
from phonenumbers import timezone as pn_timezone

__all__ = ["NOT_FOUND_PERCENT", "enrich_lead", "timezone_for"]

#: Share of leads (in percent) the simulated vendor does not know.
NOT_FOUND_PERCENT: Final = 8

# industry -> (weight, revenue per employee in USD, company-name hints)
_INDUSTRIES: Final[dict[str, tuple[int, float, tuple[str, ...]]]] = {
    "software": (18, 250_000, ("soft", "tech", "labs", "cloud", "data", "systems", "digital")),
    "financial_services": (10, 400_000, ("bank", "capital", "financial", "invest", "credit")),
    "healthcare": (11, 150_000, ("health", "medical", "clinic", "care", "pharma", "bio")),
    "manufacturing": (10, 300_000, ("manufactur", "industr", "steel", "works", "machin")),
    "retail": (8, 180_000, ("retail", "store", "shop", "market", "goods")),
    "real_estate": (6, 350_000, ("realty", "property", "estate", "homes")),
    "construction": (6, 250_000, ("construct", "build", "roofing", "contract")),
    "professional_services": (9, 160_000, ("consult", "partners", "advis", "group", "law")),
    "logistics": (5, 220_000, ("logistic", "freight", "transport", "shipping", "fleet")),
    "education": (4, 90_000, ("school", "academy", "learning", "university", "edu")),
    "insurance": (5, 450_000, ("insur", "assurance", "mutual")),
    "hospitality": (4, 70_000, ("hotel", "restaurant", "hospitality", "travel")),
    "energy": (4, 800_000, ("energy", "solar", "power", "oil", "gas")),
}

# (min, max) employees and weight of each company-size bucket
_SIZE_BUCKETS: Final = (
    ((2, 10), 22),
    ((11, 50), 26),
    ((51, 200), 21),
    ((201, 1000), 15),
    ((1001, 5000), 9),
    ((5001, 50_000), 7),
)

_REVENUE_BANDS: Final = (
    (1e6, "<1M"),
    (1e7, "1M-10M"),
    (5e7, "10M-50M"),
    (1e8, "50M-100M"),
    (5e8, "100M-500M"),
    (1e9, "500M-1B"),
    (math.inf, "1B+"),
)

# seniority -> (weight, keywords found in titles)
_SENIORITY: Final[dict[str, tuple[int, tuple[str, ...]]]] = {
    "c_level": (
        8,
        ("chief", "ceo", "cto", "cfo", "coo", "cmo", "cio", "founder", "owner", "president"),
    ),
    "vp": (12, ("vp", "vice president", "head of", "svp", "evp")),
    "director": (20, ("director",)),
    "manager": (28, ("manager", "lead", "supervisor")),
    "senior": (17, ("senior", "sr", "principal", "staff")),
    "entry": (15, ("associate", "assistant", "coordinator", "junior", "intern", "analyst")),
}

_FUNCTIONS: Final = (
    ("sales", 25),
    ("marketing", 15),
    ("operations", 18),
    ("engineering", 14),
    ("finance", 10),
    ("it", 8),
    ("hr", 6),
    ("procurement", 4),
)

_TITLES: Final[dict[str, str]] = {
    "c_level": "Chief {F} Officer",
    "vp": "VP of {F}",
    "director": "Director of {F}",
    "manager": "{F} Manager",
    "senior": "Senior {F} Specialist",
    "entry": "{F} Associate",
}

_FUNCTION_NAMES: Final[dict[str, str]] = {
    "sales": "Sales",
    "marketing": "Marketing",
    "operations": "Operations",
    "engineering": "Engineering",
    "finance": "Finance",
    "it": "Information Technology",
    "hr": "People",
    "procurement": "Procurement",
}

# The main timezone of each US state and Canadian province (by population).
_ZONE_STATES: Final = {
    "America/New_York": "CT DE DC FL GA IN KY ME MD MA MI NH NJ NY NC OH PA RI SC VT VA WV",
    "America/Chicago": "AL AR IL IA KS LA MN MS MO NE ND OK SD TN TX WI",
    "America/Denver": "CO MT NM UT WY ID",
    "America/Phoenix": "AZ",
    "America/Los_Angeles": "CA NV OR WA",
    "America/Anchorage": "AK",
    "Pacific/Honolulu": "HI",
    "America/Puerto_Rico": "PR",
    "America/Toronto": "ON QC",
    "America/Halifax": "NS NB PE",
    "America/St_Johns": "NL",
    "America/Winnipeg": "MB",
    "America/Regina": "SK",
    "America/Edmonton": "AB",
    "America/Vancouver": "BC",
}
_STATE_TZ: Final = {
    state: zone for zone, states in _ZONE_STATES.items() for state in states.split()
}

# The main timezone of countries whose numbers span several zones.
_COUNTRY_TZ: Final[dict[str, str]] = {
    "US": "America/New_York",
    "CA": "America/Toronto",
    "GB": "Europe/London",
    "AU": "Australia/Sydney",
    "BR": "America/Sao_Paulo",
    "MX": "America/Mexico_City",
    "RU": "Europe/Moscow",
    "IN": "Asia/Kolkata",
    "ID": "Asia/Jakarta",
    "NZ": "Pacific/Auckland",
    "ES": "Europe/Madrid",
    "PT": "Europe/Lisbon",
    "FR": "Europe/Paris",
}

_US_SPREAD: Final = (
    ("America/New_York", 47),
    ("America/Chicago", 29),
    ("America/Denver", 7),
    ("America/Phoenix", 2),
    ("America/Los_Angeles", 15),
)

_UNKNOWN_TZ: Final = "Etc/Unknown"


def _norm(value: Any) -> str:
    return "" if value is None else str(value).strip().lower()


def _rng(*parts: str) -> random.Random:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _weighted(rng: random.Random, pairs: Sequence[tuple[str, int]]) -> str:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs], k=1)[0]


def _round2(n: float) -> int:
    """Round to two significant digits, as vendors report headcounts."""
    if n < 100:
        return max(1, round(n))
    digits = math.floor(math.log10(n)) - 1
    return int(round(n, -digits))


def _industry(company: str, rng: random.Random) -> str:
    for name, (_, _, hints) in _INDUSTRIES.items():
        if any(hint in company for hint in hints):
            # Names mislead sometimes: 20 % of hinted companies are something else.
            if rng.random() < 0.8:
                return name
            break
    return _weighted(rng, [(name, spec[0]) for name, spec in _INDUSTRIES.items()])


def _seniority(title: str, rng: random.Random) -> str:
    padded = " " + re.sub(r"[^a-z0-9]+", " ", title.lower()).strip() + " "
    for level, (_, words) in _SENIORITY.items():
        if any(f" {word} " in padded for word in words):
            return level
    return _weighted(rng, [(level, spec[0]) for level, spec in _SENIORITY.items()])


def _region(phone: str, country: str) -> tuple[phonenumbers.PhoneNumber | None, str]:
    region = country.upper() if len(country) == 2 else ""
    if phone:
        try:
            number = phonenumbers.parse(phone, region or "US")
        except phonenumbers.NumberParseException:
            return None, region
        if phonenumbers.is_valid_number(number):
            # The country code's main region: +44 7911 is "GG" by range, "GB" by code.
            main = phonenumbers.region_code_for_country_code(number.country_code or 0)
            return number, main if main and main != "ZZ" else region
    return None, region


def timezone_for(
    phone: str | None, state: str | None, country: str | None, rng: random.Random
) -> str:
    """A plausible IANA timezone: phone area code, then state, then country."""
    number, region = _region((phone or "").strip(), _norm(country))
    zones: tuple[str, ...] = ()
    if number is not None:
        zones = tuple(z for z in pn_timezone.time_zones_for_number(number) if z != _UNKNOWN_TZ)
        if len(zones) == 1:
            return zones[0]
    state_code = (state or "").strip().upper()
    if state_code in _STATE_TZ and region in {"", "US", "CA", "PR"}:
        return _STATE_TZ[state_code]
    if zones and len(zones) <= 4:
        primary = _COUNTRY_TZ.get(region)
        return primary if primary in zones else sorted(zones)[0]
    if region in _COUNTRY_TZ:
        return _COUNTRY_TZ[region]
    if region and region != "US":
        try:
            example = phonenumbers.example_number(region)
        except Exception:  # unknown region code
            example = None
        if example is not None:
            guess = [z for z in pn_timezone.time_zones_for_number(example) if z != _UNKNOWN_TZ]
            if guess:
                return guess[0]
    return _weighted(rng, _US_SPREAD)


def enrich_lead(lead: Mapping[str, Any]) -> dict[str, Any]:
    """The enrichment result for one lead of a ``POST /v1/enrich`` batch.

    ``lead`` has ``key`` and optionally ``email``, ``phone``, ``company``,
    ``title``, ``country``, ``state``. The answer is a pure function of them.
    """
    key = str(lead.get("key", ""))
    fields = [
        _norm(lead.get(f)) for f in ("email", "phone", "company", "title", "country", "state")
    ]
    person = _rng("person", key, *fields)
    if person.randrange(100) < NOT_FOUND_PERCENT:
        return {"key": key, "found": False}

    company = _norm(lead.get("company"))
    email = _norm(lead.get("email"))
    domain = email.partition("@")[2] if "@" in email else ""
    firm = _rng("company", company or domain or key)
    industry = _industry(company or domain, firm)
    low, high = firm.choices(
        [b[0] for b in _SIZE_BUCKETS], weights=[b[1] for b in _SIZE_BUCKETS], k=1
    )[0]
    size = _round2(math.exp(firm.uniform(math.log(low), math.log(high))))
    revenue = size * _INDUSTRIES[industry][1] * firm.lognormvariate(0.0, 0.45)
    revenue_band = next(band for limit, band in _REVENUE_BANDS if revenue < limit)

    given_title = str(lead.get("title") or "").strip()
    seniority = _seniority(given_title.lower(), person)
    function = _weighted(person, _FUNCTIONS)
    if size <= 10 and seniority in {"senior", "entry"} and person.random() < 0.5:
        seniority = "c_level"  # tiny firms are mostly owners
    title = given_title or _TITLES[seniority].format(F=_FUNCTION_NAMES[function])
    tz = timezone_for(
        str(lead.get("phone") or ""),
        str(lead.get("state") or ""),
        _norm(lead.get("country")),
        person,
    )
    slug = hashlib.sha256(f"li\x1f{key}".encode()).hexdigest()[:12]
    return {
        "key": key,
        "found": True,
        "industry": industry,
        "company_size": size,
        "seniority": seniority,
        "revenue_band": revenue_band,
        "timezone": tz,
        "linkedin_url": f"https://www.linkedin.com/in/lead-{slug}",
        "title": title,
        "job_function": function,
    }
