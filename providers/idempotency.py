"""The idempotency key of a send, derived from (campaign, lead, touch).

The key is the same for every attempt of a send, in every process, after any
restart or replay, because it depends only on the three values that make a
send unique (the pipeline's ``UNIQUE (campaign, lead, touch)`` claim)::

    key = "lf1-" + sha256(json.dumps([campaign_id, lead_id, touch]))[:32 hex]

* JSON encoding keeps the parts apart (``("a-b", "c")`` and ``("a", "b-c")``
  differ) with no escaping rules of our own.
* 128 bits of the digest make a collision practically impossible while the
  key stays short (36 characters; Stripe-style APIs accept up to 255).
* The lead id is hashed, so the key carries no personal data into provider
  logs.
* ``lf1`` versions the recipe; changing it would re-key every in-flight send,
  so it must not change while a provider still deduplicates on old keys.

It is sent as the ``Idempotency-Key`` HTTP header (and the same-named email
header), so providers that deduplicate (Telnyx, Resend, ...) drop a repeat.
"""

from __future__ import annotations

import hashlib
import json
from typing import Final

__all__ = ["IDEMPOTENCY_HEADER", "KEY_PREFIX", "idempotency_key"]

#: The HTTP (and email) header carrying the key.
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
#: Version prefix of every key.
KEY_PREFIX: Final = "lf1-"


def idempotency_key(campaign_id: str, lead_id: str, touch: int) -> str:
    """The stable key of touch ``touch`` of ``lead_id`` in ``campaign_id``."""
    if touch < 0:
        raise ValueError(f"touch must be >= 0, got {touch}")
    raw = json.dumps([str(campaign_id), str(lead_id), int(touch)], separators=(",", ":"))
    return KEY_PREFIX + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]
