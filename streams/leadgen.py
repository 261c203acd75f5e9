"""Deterministic synthetic leads for demos, tests and benchmarks.

``generate(n, seed)`` yields CSV-ready rows: valid US contacts across time
zones, plus a chosen share of invalid rows (no usable contact) and of
duplicates (the same phone as an earlier lead, written differently).
"""

from __future__ import annotations

import csv
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streams.contact import normalize_phone

__all__ = ["LeadMix", "generate", "write_csv"]

_FIRST = [
    "Ana",
    "Ben",
    "Chloé",
    "Dev",
    "Eve",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jamal",
    "Kai",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tariq",
]
_LAST = [
    "Nguyen",
    "Smith",
    "García",
    "Okafor",
    "Kowalski",
    "Chen",
    "Patel",
    "Müller",
    "Johnson",
    "Haddad",
    "Silva",
    "Kim",
    "Brown",
    "Rossi",
    "Novak",
]
_COMPANIES = [
    "Acme Solar",
    "Blue Harbor Logistics",
    "Cedar Health",
    "Delta Roofing",
    "Evergreen Realty",
    "Fulcrum Analytics",
    "Granite Insurance",
    "Helix Biotech",
    "Ironwood Capital",
    "Juniper Foods",
    "Keystone HVAC",
    "Lumen Dental",
]
_TITLES = [
    "Owner",
    "CEO",
    "VP Sales",
    "Director of Operations",
    "Office Manager",
    "Head of Growth",
    "Founder",
    "Marketing Manager",
    "CFO",
    "Purchasing Lead",
]
# (area code, state, IANA zone): spread over the US time zones.
_AREAS = [
    ("212", "NY", "America/New_York"),
    ("617", "MA", "America/New_York"),
    ("305", "FL", "America/New_York"),
    ("203", "CT", "America/New_York"),
    ("312", "IL", "America/Chicago"),
    ("512", "TX", "America/Chicago"),
    ("303", "CO", "America/Denver"),
    ("602", "AZ", "America/Phoenix"),
    ("415", "CA", "America/Los_Angeles"),
    ("206", "WA", "America/Los_Angeles"),
]


def _ascii(name: str) -> str:
    """``name`` lower-cased without accents, as most mailbox names are written."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()


@dataclass(frozen=True)
class LeadMix:
    """Shares of special rows, as fractions of n."""

    invalid: float = 0.05
    duplicates: float = 0.03


def _phone(rng: random.Random, area: str) -> str:
    while True:
        candidate = f"+1{area}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"
        if candidate[5:8] != "555" and normalize_phone(candidate):
            return candidate


def generate(n: int, seed: int = 7, mix: LeadMix | None = None) -> Iterator[dict[str, str]]:
    """``n`` rows (including the invalid and duplicate shares), reproducibly."""
    mix = mix or LeadMix()
    rng = random.Random(seed)
    seen: list[dict[str, str]] = []
    for i in range(n):
        roll = rng.random()
        if roll < mix.invalid:
            yield {
                "lead_id": f"lead-{i:07d}",
                "first_name": rng.choice(_FIRST),
                "last_name": rng.choice(_LAST),
                "email": "not-an-email",
                "phone": "12345",
                "company": rng.choice(_COMPANIES),
                "title": rng.choice(_TITLES),
                "timezone": "",
                "country": "US",
                "state": "",
            }
            continue
        if roll < mix.invalid + mix.duplicates and seen:
            twin = dict(rng.choice(seen))
            digits = twin["phone"][2:]
            twin["phone"] = (
                f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"  # same number, other format
            )
            twin["lead_id"] = f"lead-{i:07d}"
            twin["email"] = twin["email"].upper()
            yield twin
            continue
        area, state, zone = rng.choice(_AREAS)
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        company = rng.choice(_COMPANIES)
        row = {
            "lead_id": f"lead-{i:07d}",
            "first_name": first,
            "last_name": last,
            "email": f"{_ascii(first)}.{_ascii(last)}.{i}@{company.split()[0].lower()}.example",
            "phone": _phone(rng, area),
            "company": company,
            "title": rng.choice(_TITLES),
            "timezone": zone if rng.random() < 0.5 else "",
            "country": "US",
            "state": state,
        }
        if len(seen) < 5000:
            seen.append(row)
        yield row


def write_csv(path: Path, n: int, seed: int = 7, mix: LeadMix | None = None) -> Path:
    """Write ``n`` generated rows to ``path`` as CSV with a header."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer: csv.DictWriter[str] | None = None
        for row in generate(n, seed, mix):
            if writer is None:
                writer = csv.DictWriter(fh, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
    return path
