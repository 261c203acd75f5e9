"""Benchmark leads: real ``RawLead`` payloads, a paced producer, and the baseline's transforms.

Leads come from :mod:`streams.leadgen` and become records through
:func:`streams.ingest.row_to_record`, exactly as ``leadflow produce`` makes
them; they are encoded before the clock starts, so producing them costs only
librdkafka's time. The producer uses ingestion's settings (idempotence,
``murmur2_random`` so keys co-partition with aiokafka/Faust, lz4, linger 20 ms).

The baseline's transforms map each record to the next stage's schema with
the same fields leadflow fills (so messages are the same size), but compute
nothing: that is the bare client's ceiling.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streams.codec import AvroCodec
from streams.errors import LeadflowError
from streams.ingest import row_to_record
from streams.leadgen import LeadMix, generate
from streams.settings import Settings

__all__ = [
    "HOPS",
    "WARMUP_PREFIX",
    "EncodedLead",
    "ProduceError",
    "encode_leads",
    "produce",
    "transform",
]

#: Key prefix of warm-up leads (left out of every measurement).
WARMUP_PREFIX = "warm-"

#: The four hops: (input topic, output topic, input schema, output schema).
HOPS: tuple[tuple[str, str, str, str], ...] = (
    ("raw", "enriched", "leadflow.RawLead", "leadflow.EnrichedLead"),
    ("enriched", "scored", "leadflow.EnrichedLead", "leadflow.ScoredLead"),
    ("scored", "touch-due", "leadflow.ScoredLead", "leadflow.TouchDue"),
    ("touch-due", "sent", "leadflow.TouchDue", "leadflow.TouchSent"),
)


class ProduceError(LeadflowError):
    """The broker did not acknowledge every benchmark record."""

    reason = "bench_produce"


@dataclass(frozen=True)
class EncodedLead:
    """One lead ready to produce: key and ``RawLead`` payload."""

    key: bytes
    value: bytes


def encode_leads(
    campaign_id: str, count: int, *, seed: int = 7, key_prefix: str = ""
) -> list[EncodedLead]:
    """``count`` valid, distinct leads of ``campaign_id`` as encoded ``RawLead`` payloads.

    The generator draws phone numbers at random, so two leads can share one
    (and the second would be a duplicate, never contacted); those are skipped.
    """
    codec = AvroCodec("leadflow.RawLead")
    now = datetime.now(UTC)
    out: list[EncodedLead] = []
    phones: set[str] = set()
    rows = generate(count + count // 10 + 10, seed, LeadMix(invalid=0.0, duplicates=0.0))
    for line, row in enumerate(rows, 2):
        if len(out) == count:
            break
        if row["phone"] in phones:
            continue
        phones.add(row["phone"])
        if key_prefix:
            row = {**row, "lead_id": key_prefix + row["lead_id"]}
            # distinct contacts: warm-up leads must not be duplicates of real ones
            row["email"] = key_prefix + row["email"]
        record = row_to_record(campaign_id, row, line=line, source="csv", now=now)
        out.append(EncodedLead(record["lead_id"].encode(), codec.encode(record)))
    return out


def produce(
    settings: Settings,
    topic: str,
    leads: Sequence[EncodedLead],
    *,
    rate: float | None = None,
) -> float:
    """Produce ``leads`` to ``topic`` (at ``rate`` per second if given); returns seconds taken."""
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 20 if rate is None else 1,
            "batch.num.messages": 10000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 200000,
        }
    )
    started = time.monotonic()
    for i, lead in enumerate(leads):
        if rate is not None:
            due = started + i / rate
            wait = due - time.monotonic()
            if wait > 0.0005:
                producer.poll(0)
                time.sleep(wait)
        while True:
            try:
                producer.produce(topic, key=lead.key, value=lead.value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if failures or remaining:
        raise ProduceError(
            f"{len(failures) + remaining} benchmark records not acknowledged "
            f"(first error: {failures[0] if failures else 'flush timed out'})"
        )
    return time.monotonic() - started


# --- the baseline's transforms --------------------------------------------------------

Transform = Callable[[dict[str, Any]], dict[str, Any]]


def _enriched(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "campaign_id": r["campaign_id"],
        "lead_id": r["lead_id"],
        "identity_key": hashlib.sha256(r["lead_id"].encode()).hexdigest(),
        "first_name": r["first_name"],
        "last_name": r["last_name"],
        "email": r["email"],
        "phone_e164": r["phone"],
        "company": r["company"],
        "title": r["title"],
        "timezone": r["timezone"] or "America/New_York",
        "country": r["country"],
        "state": r["state"],
        "attributes": r["attributes"],
        "industry": "software",
        "company_size": 120,
        "seniority": "manager",
        "revenue_band": "10m-50m",
        "enrichment_cached": False,
        "duplicate_of": None,
        "event_time": r["event_time"],
    }


def _scored(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "campaign_id": r["campaign_id"],
        "lead_id": r["lead_id"],
        "identity_key": r["identity_key"],
        "score": 72.5,
        "tier": "B",
        "qualified": True,
        "reasons": ["title_match", "has_phone"],
        "first_name": r["first_name"],
        "last_name": r["last_name"],
        "email": r["email"],
        "phone_e164": r["phone_e164"],
        "company": r["company"],
        "title": r["title"],
        "timezone": r["timezone"],
        "industry": r["industry"],
        "event_time": r["event_time"],
        "state": r["state"],
        "country": r["country"],
    }


def _touch_due(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "campaign_id": r["campaign_id"],
        "lead_id": r["lead_id"],
        "touch": 1,
        "channel": "sms",
        "persona": "gianna",
        "template": "touch-1",
        "variant": "a-question",
        "due_at": r["event_time"],
        "priority": 2725,
        "tier": r["tier"],
        "attempt": 1,
        "event_time": r["event_time"],
        "to_phone": r["phone_e164"],
        "to_email": r["email"],
        "first_name": r["first_name"],
        "last_name": r["last_name"],
        "company": r["company"],
        "title": r["title"],
        "timezone": r["timezone"],
        "state": r["state"],
        "identity_key": r["identity_key"],
    }


def _sent(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "campaign_id": r["campaign_id"],
        "lead_id": r["lead_id"],
        "touch": r["touch"],
        "channel": r["channel"],
        "provider": "http",
        "status": "accepted",
        "provider_message_id": "sms_" + r["identity_key"][:24],
        "idempotency_key": r["identity_key"][:40],
        "cost_units": 1.0,
        "sent_at": r["due_at"],
        "error": None,
        "event_time": r["event_time"],
    }


_TRANSFORMS: dict[str, Transform] = {
    "raw": _enriched,
    "enriched": _scored,
    "scored": _touch_due,
    "touch-due": _sent,
}


def transform(input_topic: str) -> Transform:
    """The baseline's record mapping for the hop reading ``input_topic`` (base name)."""
    return _TRANSFORMS[input_topic]
