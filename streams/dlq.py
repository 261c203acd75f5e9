"""Dead letters for operators: select, inspect and redrive (``leadflow dlq``).

A dead letter (``leadflow.DeadLetter`` on the ``dead-letter`` topic) keeps a
failed record's original topic, partition, offset, key and bytes, with the
stage, the reason and any earlier failures. This module:

- selects dead letters with a :class:`DeadLetterFilter` (stage, reason,
  campaign, original topic, lead, time range on ``failed_at``);
- describes one as JSON with its payload decoded and contact data masked
  (:func:`describe`);
- redrives them (:func:`redrive`): each original payload goes back to its
  original topic and partition with its original key, carrying
  ``x-leadflow-attempt`` (the dead letter's attempt + 1) and
  ``x-leadflow-history`` (its earlier failures plus the failure it records).
  A redriven record that fails again becomes a new dead letter with that
  history, so nothing about earlier attempts is lost.

Redrive is at-least-once and safe to repeat: a dead letter is recorded in
Postgres (``dead_letter_redrives``) once Kafka acknowledged its republished
record, and later runs skip it unless asked to redrive ``again``. Even then
the pipeline's own idempotency (the lead-state table and the send ledger's
one claim per campaign, lead and touch) means no lead is contacted twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from agents.runtime import ATTEMPT_HEADER, HISTORY_HEADER, encode_history
from sinks.dead_letter_redrives import RedriveRecord, RedriveStore
from streams.campaign import parse_duration
from streams.codec import AvroCodec, decode_payload_any
from streams.dead_letters import (
    DeadLetter,
    DeadLetterId,
    dead_letter_topic,
    fetch_dead_letters,
    iter_dead_letters,
)
from streams.errors import CodecError, ConfigError, KafkaUnavailableError, LeadflowError
from streams.kafka_config import confluent_config
from streams.pii import mask
from streams.settings import Settings
from streams.topics import CATALOG, TopicSpec

__all__ = [
    "DEFAULT_RATE",
    "DeadLetterFilter",
    "DeadLetterNotFoundError",
    "RedriveDeliveryError",
    "RedriveResult",
    "decode_original",
    "describe",
    "mask_record",
    "parse_time",
    "redrive",
    "redrive_headers",
    "resolve_topic",
    "select_dead_letters",
    "summarize",
]

log = logging.getLogger(__name__)

#: Default redrive rate cap, records per second.
DEFAULT_RATE = 50.0
#: Records sent between two waits for Kafka's acknowledgements (and Postgres notes).
_CHUNK = 200


class DeadLetterNotFoundError(LeadflowError):
    """No dead letter sits at a given ``partition:offset`` (never written, or expired)."""

    reason = "dead_letter_not_found"


class RedriveDeliveryError(LeadflowError):
    """Kafka did not acknowledge some redriven records (they stay unrecorded)."""

    reason = "redrive_delivery"


# --- selecting ---------------------------------------------------------------------


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO-8601 time (naive means UTC), ``now``, or a duration ago such as ``2h`` or ``1d12h``.

    Raises :class:`ConfigError` for anything else.
    """
    now = now or datetime.now(UTC)
    value = text.strip()
    if value.lower() == "now":
        return now
    try:
        return now - parse_duration(value.lower())
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{text!r} is neither an ISO-8601 time (2026-11-30T13:00:00Z) "
            "nor a duration ago (30m, 2h, 1d)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def resolve_topic(settings: Settings, name: str) -> str:
    """A catalog base name (``raw``) as its full name; any other name as given."""
    for spec in CATALOG:
        if name == spec.name:
            return spec.full_name(settings)
    return name


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters to take. Empty sets match everything; times bound ``failed_at``."""

    stages: frozenset[str] = frozenset()
    reasons: frozenset[str] = frozenset()
    campaigns: frozenset[str] = frozenset()
    #: Full names of original topics.
    topics: frozenset[str] = frozenset()
    leads: frozenset[str] = frozenset()
    #: Inclusive lower bound on ``failed_at``.
    since: datetime | None = None
    #: Exclusive upper bound on ``failed_at``.
    until: datetime | None = None

    @property
    def empty(self) -> bool:
        """True when the filter selects every dead letter."""
        return not (
            self.stages
            or self.reasons
            or self.campaigns
            or self.topics
            or self.leads
            or self.since
            or self.until
        )

    def matches(self, dead: DeadLetter) -> bool:
        """True when ``dead`` passes every condition."""
        if self.stages and dead.stage not in self.stages:
            return False
        if self.reasons and dead.reason not in self.reasons:
            return False
        if self.campaigns and dead.campaign_id not in self.campaigns:
            return False
        if self.topics and dead.original_topic not in self.topics:
            return False
        if self.leads and dead.lead_id not in self.leads:
            return False
        failed = dead.failed_at
        if self.since is not None and failed < self.since:
            return False
        return self.until is None or failed < self.until

    def select(self, dead_letters: Iterable[DeadLetter]) -> list[DeadLetter]:
        """The matching dead letters, oldest failure first."""
        return sorted(
            (d for d in dead_letters if self.matches(d)), key=lambda d: (d.failed_at, d.id)
        )


def select_dead_letters(
    settings: Settings,
    filter_: DeadLetterFilter,
    ids: Iterable[DeadLetterId] = (),
    *,
    timeout_s: float = 60.0,
) -> list[DeadLetter]:
    """The dead letters ``filter_`` matches, oldest failure first.

    With ``ids`` only those are read (and must all exist, else
    :class:`DeadLetterNotFoundError`); otherwise the whole topic is read, from
    ``filter_.since`` on when it is set.
    """
    wanted = sorted(set(ids))
    if wanted:
        found = fetch_dead_letters(settings, wanted, timeout_s=timeout_s)
        missing = [str(i) for i in wanted if i not in found]
        if missing:
            raise DeadLetterNotFoundError(
                f"no dead letter at {', '.join(missing[:10])}"
                f"{' ...' if len(missing) > 10 else ''} on {dead_letter_topic(settings)}"
            )
        return filter_.select(found.values())
    return filter_.select(iter_dead_letters(settings, since=filter_.since, timeout_s=timeout_s))


def summarize(dead_letters: Iterable[DeadLetter]) -> Counter[tuple[str, str]]:
    """Counts by (stage, reason)."""
    return Counter((d.stage, d.reason) for d in dead_letters)


# --- describing --------------------------------------------------------------------


def mask_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` with phones, emails and names masked (see :mod:`streams.pii`)."""
    return dict(mask(record))


def _spec_of(settings: Settings, topic: str) -> TopicSpec | None:
    for spec in CATALOG:
        if spec.full_name(settings) == topic:
            return spec
    return None


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + key.hex()


def decode_original(settings: Settings, dead: DeadLetter) -> tuple[str, dict[str, Any]]:
    """The failed record decoded: with its topic's schema, else any schema we know.

    Raises :class:`CodecError` when the payload is not one of our records.
    """
    payload = bytes(dead.record["payload"])
    spec = _spec_of(settings, dead.original_topic)
    if spec is not None:
        try:
            codec = AvroCodec(spec.value_schema, subject=dead.original_topic)
            return spec.value_schema, codec.decode(payload)
        except CodecError:
            pass  # e.g. a record of another type sent to the wrong topic
    decoded = decode_payload_any(payload, subject=dead.original_topic)
    return decoded.full_name, decoded.record


def describe(
    settings: Settings,
    dead: DeadLetter,
    *,
    redriven: RedriveRecord | None = None,
    show_pii: bool = False,
) -> dict[str, Any]:
    """``dead`` as a JSON-ready document: every field, the payload decoded (masked)."""
    rec = dead.record
    doc: dict[str, Any] = {
        "id": str(dead.id),
        "dead_letter_topic": dead_letter_topic(settings),
        **{k: v for k, v in rec.items() if k not in ("payload", "original_key", "history")},
        "original_key": _key_text(rec.get("original_key")),
        "history": dead.history,
    }
    payload = bytes(rec["payload"])
    body: dict[str, Any] = {"size": len(payload)}
    try:
        schema, record = decode_original(settings, dead)
        body["schema"] = schema
        body["record"] = record if show_pii else mask_record(record)
    except CodecError as exc:
        body["error"] = f"{exc.reason}: {exc.summary}"
    if show_pii:
        body["bytes_hex"] = payload.hex()
    doc["payload"] = body
    doc["redrive"] = (
        None
        if redriven is None
        else {
            "count": redriven.redrive_count,
            "first_redriven_at": redriven.first_redriven_at,
            "redriven_at": redriven.redriven_at,
        }
    )
    return doc


# --- redriving ---------------------------------------------------------------------


def redrive_headers(dead: DeadLetter) -> list[tuple[str, bytes]]:
    """The headers a redriven record carries: the next attempt and every failure so far."""
    rec = dead.record
    history = [
        *dead.history,
        {
            "stage": rec["stage"],
            "reason": rec["reason"],
            "error_class": rec["error_class"],
            "error_message": rec["error_message"],
            "failed_at": dead.failed_at,
        },
    ]
    return [
        (ATTEMPT_HEADER, str(dead.attempt + 1).encode()),
        (HISTORY_HEADER, encode_history(history)),
    ]


@dataclass
class RedriveResult:
    """What a redrive did (or, with ``dry_run``, would do)."""

    dry_run: bool
    #: Records (to be) republished, per original topic.
    redriven: Counter[str] = field(default_factory=Counter)
    #: Skipped: redriven before (and ``again`` not given).
    already: int = 0
    #: Skipped: the original topic is not one of this deployment's pipeline topics.
    foreign: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """Records (to be) republished."""
        return sum(self.redriven.values())

    def lines(self) -> list[str]:
        """The result as text."""
        verb = "would redrive" if self.dry_run else "redriven"
        out = [f"{verb}: {self.total}" + (f" in {self.seconds:.1f} s" if not self.dry_run else "")]
        out += [f"  {topic:<40} {n:>7}" for topic, n in sorted(self.redriven.items())]
        if self.already:
            out.append(f"skipped, redriven before: {self.already} (use --again to redrive them)")
        for topic, n in sorted(self.foreign.items()):
            out.append(f"skipped, not a pipeline topic here: {topic} ({n})")
        return out


Progress = Callable[[int, int, float], None]


def redrive(
    settings: Settings,
    dead_letters: Sequence[DeadLetter],
    *,
    store: RedriveStore | None = None,
    rate: float = DEFAULT_RATE,
    dry_run: bool = False,
    again: bool = False,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RedriveResult:
    """Republish ``dead_letters`` to their original topics (see the module docstring).

    At most ``rate`` records per second (spread evenly) are sent. ``progress``
    is called with (done, total, seconds) after each acknowledged chunk.
    ``dry_run`` sends and records nothing and reports what would be sent.
    Raises :class:`RedriveDeliveryError` when Kafka refused some records; those
    acknowledged before are recorded.
    """
    if rate <= 0:
        raise ConfigError(f"redrive rate must be > 0 records/s, not {rate}")
    store = store or RedriveStore(settings.dsn, dead_letter_topic(settings))
    result = RedriveResult(dry_run=dry_run)
    ours = {spec.full_name(settings) for spec in CATALOG if spec.name != "dead-letter"}
    if dry_run:
        return _plan(dead_letters, ours, store, again, result)
    started = clock()
    with store.lock():
        todo = _plan_list(dead_letters, ours, store, again, result)
        _send(settings, todo, store, rate, result, progress, clock, sleep)
    result.seconds = clock() - started
    log.info(
        "redrive: %d records republished, %d skipped as redriven before, %d foreign",
        result.total,
        result.already,
        sum(result.foreign.values()),
    )
    return result


def _plan(
    dead_letters: Sequence[DeadLetter],
    ours: set[str],
    store: RedriveStore,
    again: bool,
    result: RedriveResult,
) -> RedriveResult:
    for dead in _plan_list(dead_letters, ours, store, again, result):
        result.redriven[dead.original_topic] += 1
    return result


def _plan_list(
    dead_letters: Sequence[DeadLetter],
    ours: set[str],
    store: RedriveStore,
    again: bool,
    result: RedriveResult,
) -> list[DeadLetter]:
    todo = []
    for dead in dead_letters:
        if dead.original_topic in ours:
            todo.append(dead)
        else:
            result.foreign[dead.original_topic] += 1
    if not again and todo:
        done = store.lookup(todo)
        result.already = sum(1 for d in todo if d.id in done)
        todo = [d for d in todo if d.id not in done]
    return todo


def _producer(settings: Settings) -> Producer:
    return Producer(
        {
            **confluent_config(),
            "bootstrap.servers": settings.bootstrap_servers,
            "partitioner": "murmur2_random",  # the Java client's (and Faust's) key mapping
            "enable.idempotence": True,
            "linger.ms": 5,
            "log_level": 3,
        }
    )


def _partition_counts(producer: Producer, topics: Iterable[str]) -> dict[str, int]:
    counts = {}
    for topic in set(topics):
        try:
            meta = producer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"cannot read metadata of {topic}: {exc}") from exc
        info = meta.topics.get(topic)
        counts[topic] = 0 if info is None or info.error is not None else len(info.partitions)
    return counts


def _send(
    settings: Settings,
    todo: Sequence[DeadLetter],
    store: RedriveStore,
    rate: float,
    result: RedriveResult,
    progress: Progress | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    if not todo:
        return
    producer = _producer(settings)
    partitions = _partition_counts(producer, (d.original_topic for d in todo))
    missing = sorted(t for t, n in partitions.items() if n == 0)
    if missing:
        raise KafkaUnavailableError(f"original topic(s) missing: {', '.join(missing)}")
    failures: list[str] = []
    started = clock()
    sent = 0
    for begin in range(0, len(todo), _CHUNK):
        chunk = todo[begin : begin + _CHUNK]
        delivered: list[DeadLetter] = []
        for dead in chunk:
            wait = started + sent / rate - clock()
            if wait > 0:
                sleep(wait)
            _produce(producer, dead, partitions, delivered, failures)
            sent += 1
        unacknowledged = producer.flush(60)
        if unacknowledged:
            failures.append(f"{unacknowledged} still in flight after 60 s")
        store.record(delivered)  # only what Kafka acknowledged
        for dead in delivered:
            result.redriven[dead.original_topic] += 1
        if progress is not None:
            progress(begin + len(chunk), len(todo), clock() - started)
        if failures:
            raise RedriveDeliveryError(
                f"{len(failures)} redriven records were not acknowledged by Kafka "
                f"(first error: {failures[0]}); {result.total} were redriven and recorded"
            )


def _produce(
    producer: Producer,
    dead: DeadLetter,
    partitions: Mapping[str, int],
    delivered: list[DeadLetter],
    failures: list[str],
) -> None:
    rec = dead.record

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            delivered.append(dead)
        else:
            failures.append(f"{dead.id}: {err.str()}")

    topic = dead.original_topic
    # Back to the partition it came from (where the lead's state lives), while it exists.
    partition = int(rec["original_partition"])
    headers: list[tuple[str, str | bytes | None]] = [*redrive_headers(dead)]
    extra: dict[str, Any] = {}
    if 0 <= partition < partitions[topic]:
        extra["partition"] = partition
    while True:
        try:
            producer.produce(
                topic,
                key=rec.get("original_key"),
                value=bytes(rec["payload"]),
                headers=headers,
                on_delivery=on_delivery,
                **extra,
            )
        except BufferError:
            producer.poll(0.05)
            continue
        producer.poll(0)
        return
