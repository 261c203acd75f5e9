"""Every message the simulator accepted, duplicate detection, and request counters.

A message is *accepted* when the simulator decided to answer 2xx/250 for it,
including "drop after accept" messages whose answer is then never sent (their
``response_lost`` is true). A duplicate is an accepted message whose
Idempotency-Key, or whose (campaign, lead, touch), an earlier accepted message
already had; each counts once in ``duplicates.total`` however many ways it
repeats.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["OUTCOMES", "Ledger", "SentMessage"]

#: Request outcomes counted per endpoint.
OUTCOMES: Final = (
    "accepted",
    "rate_limited",
    "outage",
    "error",
    "timeout",
    "dropped",
    "invalid",
    "unauthorized",
    "idempotent_replay",
)

_MAX_GROUPS_SHOWN: Final = 50


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One accepted message."""

    seq: int
    provider_message_id: str
    channel: str
    campaign_id: str
    lead_id: str
    touch: int
    recipient: str
    idempotency_key: str | None
    #: The campaign-clock time from ``X-Leadflow-Clock`` (ISO 8601), as sent.
    clock: str | None
    #: Wall-clock unix time the simulator accepted it.
    accepted_at: float
    #: True when the answer was deliberately never sent (drop after accept).
    response_lost: bool = False

    def to_json(self) -> dict[str, Any]:
        """The message as JSON-ready data."""
        return dataclasses.asdict(self)


class Ledger:
    """Accepted messages, duplicate detection and per-endpoint counters."""

    def __init__(self) -> None:
        self.messages: list[SentMessage] = []
        self._by_key: dict[str, list[int]] = defaultdict(list)
        self._by_touch: dict[tuple[str, str, int], list[int]] = defaultdict(list)
        self._dup_key = 0
        self._dup_touch = 0
        self._dup_total = 0
        #: endpoint -> outcome -> count
        self.requests: dict[str, Counter[str]] = defaultdict(Counter)
        self._enrich_keys: Counter[str] = Counter()
        #: LLM prompt/completion token totals.
        self.tokens: Counter[str] = Counter()

    def reset(self) -> None:
        """Forget every message and counter."""
        self.messages = []
        self._by_key = defaultdict(list)
        self._by_touch = defaultdict(list)
        self._dup_key = self._dup_touch = self._dup_total = 0
        self.requests = defaultdict(Counter)
        self._enrich_keys = Counter()
        self.tokens = Counter()

    # --- recording -----------------------------------------------------------

    def count(self, endpoint: str, outcome: str) -> None:
        """Count one request to ``endpoint`` with ``outcome`` (one of :data:`OUTCOMES`)."""
        self.requests[endpoint][outcome] += 1

    def record(
        self,
        *,
        provider_message_id: str,
        channel: str,
        campaign_id: str,
        lead_id: str,
        touch: int,
        recipient: str,
        idempotency_key: str | None,
        clock: str | None,
        accepted_at: float,
        response_lost: bool = False,
    ) -> SentMessage:
        """Store an accepted message and update the duplicate counters."""
        seq = len(self.messages)
        message = SentMessage(
            seq=seq,
            provider_message_id=provider_message_id,
            channel=channel,
            campaign_id=campaign_id,
            lead_id=lead_id,
            touch=touch,
            recipient=recipient,
            idempotency_key=idempotency_key,
            clock=clock,
            accepted_at=accepted_at,
            response_lost=response_lost,
        )
        self.messages.append(message)
        duplicate = False
        if idempotency_key:
            seen = self._by_key[idempotency_key]
            if seen:
                self._dup_key += 1
                duplicate = True
            seen.append(seq)
        touch_key = (campaign_id, lead_id, touch)
        seen_touch = self._by_touch[touch_key]
        if seen_touch:
            self._dup_touch += 1
            duplicate = True
        seen_touch.append(seq)
        if duplicate:
            self._dup_total += 1
        self.count(channel, "dropped" if response_lost else "accepted")
        return message

    def record_enrich_keys(self, keys: list[str]) -> None:
        """Count enrichment lookups per identity key (repeats are wasted spend)."""
        self._enrich_keys.update(keys)

    # --- queries -------------------------------------------------------------

    def first_with_key(self, idempotency_key: str) -> SentMessage | None:
        """The first accepted message that carried ``idempotency_key``."""
        seqs = self._by_key.get(idempotency_key)
        return self.messages[seqs[0]] if seqs else None

    def latest_for_lead(
        self, campaign_id: str, lead_id: str, channel: str | None = None
    ) -> SentMessage | None:
        """The most recent accepted message to the lead (on ``channel`` if given)."""
        for message in reversed(self.messages):
            if (
                message.campaign_id == campaign_id
                and message.lead_id == lead_id
                and (channel is None or message.channel == channel)
            ):
                return message
        return None

    def query(
        self,
        *,
        channel: str | None = None,
        campaign_id: str | None = None,
        lead_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[SentMessage]:
        """Accepted messages matching every given filter, oldest first."""
        return [
            m
            for m in self.messages
            if (channel is None or m.channel == channel)
            and (campaign_id is None or m.campaign_id == campaign_id)
            and (lead_id is None or m.lead_id == lead_id)
            and (idempotency_key is None or m.idempotency_key == idempotency_key)
        ]

    @property
    def duplicate_count(self) -> int:
        """Accepted messages that repeat an earlier key or (campaign, lead, touch)."""
        return self._dup_total

    def duplicate_groups(self) -> list[dict[str, Any]]:
        """Each repeated key or (campaign, lead, touch) with its message ids."""
        groups: list[dict[str, Any]] = []
        for key, seqs in self._by_key.items():
            if len(seqs) > 1:
                groups.append(
                    {
                        "kind": "idempotency_key",
                        "idempotency_key": key,
                        "provider_message_ids": [
                            self.messages[s].provider_message_id for s in seqs
                        ],
                    }
                )
        for (campaign_id, lead_id, touch), seqs in self._by_touch.items():
            if len(seqs) > 1:
                groups.append(
                    {
                        "kind": "campaign_lead_touch",
                        "campaign_id": campaign_id,
                        "lead_id": lead_id,
                        "touch": touch,
                        "provider_message_ids": [
                            self.messages[s].provider_message_id for s in seqs
                        ],
                    }
                )
        return groups

    def stats(self) -> dict[str, Any]:
        """Counts per channel, per endpoint outcome, 429s served and duplicates."""
        by_channel = Counter(m.channel for m in self.messages)
        groups = self.duplicate_groups()
        endpoints = {
            name: {outcome: counts.get(outcome, 0) for outcome in OUTCOMES}
            for name, counts in sorted(self.requests.items())
        }
        repeat_keys = sum(n - 1 for n in self._enrich_keys.values())
        return {
            "messages": {
                "total": len(self.messages),
                "by_channel": dict(sorted(by_channel.items())),
            },
            "requests": endpoints,
            "rate_limited_total": sum(c.get("rate_limited", 0) for c in self.requests.values()),
            "duplicates": {
                "total": self._dup_total,
                "by_idempotency_key": self._dup_key,
                "by_campaign_lead_touch": self._dup_touch,
                "groups": groups[:_MAX_GROUPS_SHOWN],
                "groups_total": len(groups),
            },
            "enrich": {
                "leads": sum(self._enrich_keys.values()),
                "unique_keys": len(self._enrich_keys),
                "repeat_lookups": repeat_keys,
            },
            "llm_tokens": dict(self.tokens),
        }
