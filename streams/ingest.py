"""Ingestion: stream a CSV or JSON Lines file of leads into the ``raw`` topic.

The file is read row by row and never loaded whole, so memory stays flat for
any size. Each usable row becomes one ``leadflow.RawLead`` keyed by its lead
id. A row that cannot be parsed, or has neither a usable phone nor a usable
email, is written to the rejects file (JSON Lines: line, reason, row) and
counted in the summary; nothing is dropped silently.

Producing uses confluent-kafka with idempotence on, batching, and the
``murmur2_random`` partitioner: the same key-to-partition mapping as the Java
client and aiokafka (Faust), so a lead's records co-partition across topics.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import KafkaError, Message, Producer

from streams.codec import AvroCodec
from streams.contact import normalize_email, normalize_phone
from streams.errors import ConfigError, LeadflowError
from streams.kafka_config import confluent_config
from streams.settings import Settings
from streams.topics import by_name

__all__ = [
    "KNOWN_FIELDS",
    "IngestSummary",
    "RowRejectedError",
    "derive_lead_id",
    "ingest_file",
    "iter_rows",
    "row_to_record",
]

#: Columns with a meaning; any other column is kept in ``attributes``.
KNOWN_FIELDS = (
    "lead_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "company",
    "title",
    "timezone",
    "country",
    "state",
)
_MAX_FIELD_CHARS = 1024


class RowRejectedError(LeadflowError):
    """One input row could not become a lead (it goes to the rejects file)."""

    reason = "rejected"

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


@dataclass
class IngestSummary:
    """What one ingestion run did."""

    rows: int = 0
    published: int = 0
    rejected: int = 0
    reject_reasons: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    rejects_file: Path | None = None

    def lines(self) -> list[str]:
        """Human-readable summary lines."""
        rate = self.published / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"rows read:  {self.rows}",
            f"published:  {self.published} ({rate:,.0f} leads/s)",
            f"rejected:   {self.rejected}",
        ]
        out += [f"  {reason}: {n}" for reason, n in sorted(self.reject_reasons.items())]
        if self.rejected and self.rejects_file:
            out.append(f"rejects written to {self.rejects_file}")
        return out


def derive_lead_id(campaign_id: str, row: dict[str, str]) -> str:
    """A stable lead id for a row without one: the same row always gets the same id."""
    basis = "|".join([campaign_id, *(row.get(k, "").strip().lower() for k in KNOWN_FIELDS[1:7])])
    return "L" + hashlib.sha256(basis.encode()).hexdigest()[:20]


def iter_rows(
    fh: Iterable[str], kind: str
) -> Iterator[tuple[int, dict[str, str] | RowRejectedError]]:
    """(line number, row or the reason it is unusable) for each record of the file."""
    if kind == "csv":
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            return
        for row in reader:
            line = reader.line_num
            if None in row:  # more cells than header columns
                yield line, RowRejectedError("malformed", "row has more cells than the header")
                continue
            yield line, {k.strip(): (v or "") for k, v in row.items() if k}
        return
    for number, text in enumerate(fh, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, RowRejectedError("malformed", f"not valid JSON: {exc.msg}")
            continue
        if not isinstance(obj, dict):
            yield number, RowRejectedError("malformed", "a JSON Lines record must be an object")
            continue
        yield number, {str(k): "" if v is None else str(v) for k, v in obj.items()}


def row_to_record(
    campaign_id: str, row: dict[str, str], *, line: int, source: str, now: datetime
) -> dict[str, Any]:
    """The RawLead record for a row, or :class:`RowRejectedError`."""
    for key, value in row.items():
        if len(value) > _MAX_FIELD_CHARS:
            raise RowRejectedError(
                "too_long", f"column {key!r} is over {_MAX_FIELD_CHARS} characters"
            )
    phone = normalize_phone(row.get("phone"), row.get("country"))
    email = normalize_email(row.get("email"))
    if phone is None and email is None:
        raise RowRejectedError("no_contact", "neither a usable phone nor a usable email")

    def opt(key: str) -> str | None:
        value = row.get(key, "").strip()
        return value or None

    return {
        "campaign_id": campaign_id,
        "lead_id": opt("lead_id") or derive_lead_id(campaign_id, row),
        "first_name": opt("first_name"),
        "last_name": opt("last_name"),
        "email": opt("email"),
        "phone": opt("phone"),
        "company": opt("company"),
        "title": opt("title"),
        "timezone": opt("timezone"),
        "country": opt("country"),
        "state": opt("state"),
        "attributes": {k: v for k, v in row.items() if k not in KNOWN_FIELDS},
        "event_time": now,
        "source": source,
        "source_line": line,
    }


def _kind_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise ConfigError(f"{path.name}: unknown file type {suffix!r}; use .csv or .jsonl")


def ingest_file(
    settings: Settings,
    campaign_id: str,
    path: Path,
    *,
    rejects_path: Path | None = None,
    progress: Callable[[int, int, IngestSummary], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> IngestSummary:
    """Publish every usable row of ``path`` to ``raw``; reject the rest with reasons."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    kind = _kind_of(path)
    topic = by_name("raw").full_name(settings)
    codec = AvroCodec("leadflow.RawLead", subject=topic)
    rejects_path = rejects_path or path.with_name(path.name + ".rejects.jsonl")
    summary = IngestSummary(rejects_file=rejects_path)
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 50000,
            **confluent_config(),
        }
    )
    size = path.stat().st_size
    started = time.monotonic()
    with (
        path.open("r", encoding="utf-8", errors="replace", newline="") as fh,
        rejects_path.open("w", encoding="utf-8") as rejects,
    ):
        counted = _CountingReader(fh)
        for line, row in iter_rows(counted, kind):
            summary.rows += 1
            try:
                if isinstance(row, RowRejectedError):
                    raise row
                record = row_to_record(campaign_id, row, line=line, source=kind, now=clock())
            except RowRejectedError as rejected:
                summary.rejected += 1
                summary.reject_reasons[rejected.reason] += 1
                raw = row if isinstance(row, dict) else None
                rejects.write(
                    json.dumps(
                        {
                            "line": line,
                            "reason": rejected.reason,
                            "detail": str(rejected),
                            "row": raw,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                continue
            _produce(producer, topic, record["lead_id"].encode(), codec.encode(record), on_delivery)
            summary.published += 1
            if progress is not None and summary.rows % 2000 == 0:
                progress(counted.consumed, size, summary)
        remaining = producer.flush(60)
    summary.seconds = time.monotonic() - started
    if progress is not None:
        progress(size, size, summary)
    if failures or remaining:
        raise LeadflowError(
            f"{len(failures) + remaining} leads were not acknowledged by Kafka "
            f"(first error: {failures[0] if failures else 'flush timed out'})"
        )
    return summary


def _produce(
    producer: Producer,
    topic: str,
    key: bytes,
    value: bytes,
    on_delivery: Callable[[KafkaError | None, Message], None],
) -> None:
    """Produce, waiting for queue space instead of buffering without bound."""
    while True:
        try:
            producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        except BufferError:
            producer.poll(0.05)
            continue
        producer.poll(0)
        return


class _CountingReader:
    """Iterates a text file's lines and counts characters read, for the progress bar."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner
        self.consumed = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        text = self._inner.readline()
        if not text:
            raise StopIteration
        self.consumed += len(text)
        return text
