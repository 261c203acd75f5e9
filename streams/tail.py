"""Reading leadflow's topics as JSON: the logic behind ``leadflow tail``.

:func:`read_records` is the plain reader: raw records of one topic from a
start position (the end, the beginning, or a time through
``offsets_for_times``), following new ones or stopping at the end offsets
the topic had when the read started. It uses an assigned consumer with a
throw-away group id and never commits, so it leaves no consumer group
behind and never moves a stage's offsets.

:func:`tail` decodes each record with the topic's Avro codec
(:mod:`streams.topics` names each topic's value schema) into one JSON-ready
object, masks personal data (:mod:`streams.pii`) unless asked not to, and
never fails on a record: one that does not decode becomes an object with an
``error`` field and its raw bytes.

Besides the catalog topics, ``lead-state-changelog`` names the state
table's compacted changelog (``<prefix>leadflow-lead-state-changelog``,
``leadflow.LeadState`` values, keys ``campaign\\x1flead``).
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, TopicPartition

from streams.errors import CodecError, ConfigError, KafkaUnavailableError, TopicError
from streams.kafka_config import confluent_config
from streams.pii import looks_like_pii, mask
from streams.settings import Settings
from streams.topics import CATALOG

if TYPE_CHECKING:
    # streams.codec imports Faust; it is imported where records are decoded,
    # so plain readers (read_records, campaign purge) start fast.
    from streams.codec import AvroCodec

__all__ = [
    "LEAD_STATE_CHANGELOG",
    "RawRecord",
    "Start",
    "TailRequest",
    "format_record",
    "lead_state_changelog_topic",
    "parse_time",
    "read_records",
    "resolve_topic",
    "tail",
    "topic_names",
]

log = logging.getLogger(__name__)

#: The name ``tail`` accepts for the state table's changelog topic.
LEAD_STATE_CHANGELOG: Final = "lead-state-changelog"
_LEAD_STATE_SCHEMA: Final = "leadflow.LeadState"
_DEAD_LETTER_SCHEMA: Final = "leadflow.DeadLetter"
#: Records fetched per consume call.
_BATCH: Final = 500
_METADATA_TIMEOUT_S: Final = 10.0


def lead_state_changelog_topic(settings: Settings) -> str:
    """Full name of the state table's changelog: ``<prefix>leadflow-lead-state-changelog``.

    Faust names a table's changelog ``<app id>-<table>-changelog`` and the
    app id is ``<prefix>leadflow`` (:mod:`streams.app`).
    """
    return f"{settings.topic_name('leadflow')}-lead-state-changelog"


def topic_names() -> tuple[str, ...]:
    """Every topic name :func:`resolve_topic` accepts, catalog order first."""
    return (*(spec.name for spec in CATALOG), LEAD_STATE_CHANGELOG)


def resolve_topic(settings: Settings, name: str) -> tuple[str, str]:
    """(full topic name, value schema full name) for unprefixed topic ``name``."""
    if name == LEAD_STATE_CHANGELOG:
        return lead_state_changelog_topic(settings), _LEAD_STATE_SCHEMA
    for spec in CATALOG:
        if spec.name == name:
            return spec.full_name(settings), spec.value_schema
    known = ", ".join(topic_names())
    raise ConfigError(f"unknown topic {name!r}: expected one of {known} (without the prefix)")


def parse_time(text: str) -> int:
    """Epoch milliseconds from ISO-8601 (naive means UTC) or from epoch milliseconds."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{text!r} is neither an ISO-8601 time (2026-11-26T15:30:00Z) nor epoch milliseconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class Start(StrEnum):
    """Where reading starts in each partition."""

    END = "end"
    BEGINNING = "beginning"
    TIME = "time"


@dataclass(frozen=True)
class RawRecord:
    """One record as read from the broker, undecoded."""

    topic: str
    partition: int
    offset: int
    #: Record timestamp in epoch milliseconds; None when the broker has none.
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            **confluent_config(),
            "bootstrap.servers": bootstrap,
            # Never used to commit: partitions are assigned, not subscribed.
            "group.id": f"leadflow-tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "log_level": 3,
        }
    )


def _start_offsets(
    consumer: Consumer,
    topic: str,
    partitions: Sequence[int],
    start: Start,
    from_time_ms: int | None,
) -> tuple[dict[int, int], dict[int, int]]:
    """(first offset to read, end offset now) per partition."""
    lows: dict[int, int] = {}
    highs: dict[int, int] = {}
    for p in partitions:
        lows[p], highs[p] = consumer.get_watermark_offsets(
            TopicPartition(topic, p), timeout=_METADATA_TIMEOUT_S
        )
    if start is Start.BEGINNING:
        return lows, highs
    if start is Start.END:
        return dict(highs), highs
    if from_time_ms is None:
        raise ConfigError("reading from a time needs the time")
    found = consumer.offsets_for_times(
        [TopicPartition(topic, p, from_time_ms) for p in partitions], timeout=_METADATA_TIMEOUT_S
    )
    starts = dict(highs)
    for tp in found:
        if tp.offset >= 0:  # -1: no record that new yet; start at the end
            starts[tp.partition] = tp.offset
    return starts, highs


def read_records(
    bootstrap: str,
    topic: str,
    *,
    start: Start = Start.BEGINNING,
    from_time_ms: int | None = None,
    partitions: Sequence[int] = (),
    exit_at_end: bool = True,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = 0.5,
) -> Generator[RawRecord, None, None]:
    """Yield the records of ``topic`` (full name) from ``start``, in offset order per partition.

    ``partitions`` limits the read (default: every partition). With
    ``exit_at_end`` the read stops at the end offsets the partitions had
    when it started; otherwise it follows new records until ``should_stop``
    returns true (checked at least every ``poll_s`` seconds) or the caller
    stops iterating. Raises :class:`TopicError` for a missing topic or
    partition and :class:`KafkaUnavailableError` when the broker does not
    answer.
    """
    consumer = _consumer(bootstrap)
    try:
        try:
            meta = consumer.list_topics(topic, timeout=_METADATA_TIMEOUT_S)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"cannot read metadata of {topic}: {exc}") from exc
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            raise TopicError(f"topic {topic} does not exist (create it with `leadflow topics`)")
        available = sorted(info.partitions)
        chosen = sorted(set(partitions)) if partitions else available
        missing = [p for p in chosen if p not in info.partitions]
        if missing:
            raise TopicError(
                f"topic {topic} has partitions 0-{len(available) - 1}; "
                f"no partition {', '.join(map(str, missing))}"
            )
        try:
            starts, ends = _start_offsets(consumer, topic, chosen, start, from_time_ms)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"cannot read offsets of {topic}: {exc}") from exc
        remaining = {p for p in chosen if starts[p] < ends[p]}
        if exit_at_end and not remaining:
            return
        assigned = sorted(remaining) if exit_at_end else chosen
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in assigned])
        yield from _consume(consumer, topic, ends, remaining, exit_at_end, should_stop, poll_s)
    finally:
        consumer.close()


def _consume(
    consumer: Consumer,
    topic: str,
    ends: dict[int, int],
    remaining: set[int],
    exit_at_end: bool,
    should_stop: Callable[[], bool] | None,
    poll_s: float,
) -> Iterator[RawRecord]:
    while not (should_stop is not None and should_stop()):
        messages = consumer.consume(_BATCH, timeout=poll_s)
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise KafkaUnavailableError(f"reading {topic} failed: {error.str()}")
                log.debug("tail %s: %s", topic, error.str())
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if exit_at_end and (partition not in remaining or offset >= ends[partition]):
                continue
            kind, ts = msg.timestamp()
            value = msg.value()
            yield RawRecord(
                topic,
                partition,
                offset,
                None if kind == TIMESTAMP_NOT_AVAILABLE or ts < 0 else ts,
                msg.key(),
                None if value is None else bytes(value),
            )
            if exit_at_end and offset + 1 >= ends[partition]:
                _finish(consumer, topic, partition, remaining)
        if exit_at_end:
            if not messages:
                # Offsets may end in records that never arrive (compacted away,
                # transaction markers): the position tells the partition is done.
                positions = consumer.position([TopicPartition(topic, p) for p in remaining])
                for tp in positions:
                    if tp.offset >= ends[tp.partition]:
                        _finish(consumer, topic, tp.partition, remaining)
            if not remaining:
                return


def _finish(consumer: Consumer, topic: str, partition: int, remaining: set[int]) -> None:
    if partition in remaining:
        remaining.discard(partition)
        consumer.incremental_unassign([TopicPartition(topic, partition)])


@dataclass(frozen=True)
class TailRequest:
    """What ``leadflow tail`` was asked for."""

    #: Unprefixed topic name (``raw``, ``dead-letter``, ``lead-state-changelog``...).
    topic: str
    start: Start = Start.END
    #: Epoch milliseconds, for ``start=Start.TIME``.
    from_time_ms: int | None = None
    #: Stop after this many (matching) records; None: no limit.
    max_records: int | None = None
    #: Only these partitions; empty: all.
    partitions: tuple[int, ...] = ()
    #: Only records with this message key (a lead id).
    key: str | None = None
    show_pii: bool = False
    #: Stop at the end offsets seen at start instead of following.
    exit_at_end: bool = False


def tail(
    settings: Settings,
    request: TailRequest,
    *,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = 0.5,
) -> Iterator[dict[str, Any]]:
    """Yield one JSON-ready object per record (see :func:`format_record`).

    Serialise each with :func:`streams.codec.record_to_json` (bytes become
    base64, times ISO-8601).
    """
    if request.max_records is not None and request.max_records < 1:
        raise ConfigError(f"--max must be at least 1, got {request.max_records}")
    if request.start is Start.TIME and request.from_time_ms is None:
        raise ConfigError("reading from a time needs the time")
    from streams.codec import AvroCodec

    topic, schema = resolve_topic(settings, request.topic)
    codec = AvroCodec(schema, subject=topic)
    wanted = None if request.key is None else request.key.encode()
    records = read_records(
        settings.bootstrap_servers,
        topic,
        start=request.start,
        from_time_ms=request.from_time_ms,
        partitions=request.partitions,
        exit_at_end=request.exit_at_end,
        should_stop=should_stop,
        poll_s=poll_s,
    )
    shown = 0
    try:
        for record in records:
            if wanted is not None and not _key_matches(record.key, wanted):
                continue
            yield format_record(record, codec, show_pii=request.show_pii)
            shown += 1
            if request.max_records is not None and shown >= request.max_records:
                return
    finally:
        records.close()


def _key_matches(key: bytes | None, wanted: bytes) -> bool:
    # Changelog keys are campaign + 0x1f + lead; a lead id matches those too.
    return key is not None and (key == wanted or key.endswith(b"\x1f" + wanted))


def format_record(record: RawRecord, codec: AvroCodec, *, show_pii: bool) -> dict[str, Any]:
    """``record`` as one object: where it is, its key, and its decoded value.

    Fields: ``topic``, ``partition``, ``offset``, ``timestamp`` (a datetime,
    or None), ``key`` (UTF-8 text; base64 with ``"key_encoding": "base64"``
    when it is not text), then either ``schema`` (the writer version) and
    ``value`` (the record, resolved to the current version; None for a
    tombstone), or ``error``, ``error_reason``, ``raw`` (the bytes) and
    ``raw_size`` when it does not decode. Unless ``show_pii``, personal
    data in the value is masked, and ``raw`` is withheld (None) when the
    bytes hold text that looks like an email or phone number.

    A dead letter also gets ``payload_record``: its original payload decoded
    (``schema`` and ``record``, or ``error``); masked, its raw ``payload``
    bytes are replaced by None and ``payload_size``.
    """
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": None
        if record.timestamp_ms is None
        else datetime.fromtimestamp(record.timestamp_ms / 1000, UTC),
        **_key_fields(record.key),
    }
    if record.value is None:
        out["value"] = None
        return out
    try:
        version = codec.writer_of(record.value)
        value = codec.decode(record.value)
    except CodecError as exc:
        return _undecodable(out, record.value, str(exc), exc.reason, show_pii)
    except Exception as exc:  # a codec bug must not stop the tool
        return _undecodable(out, record.value, type(exc).__name__, "error", show_pii)
    if codec.full_name == _DEAD_LETTER_SCHEMA:
        value = _with_payload(value, show_pii)
    out["schema"] = version.label
    out["value"] = value if show_pii else mask(value)
    return out


def _key_fields(key: bytes | None) -> dict[str, Any]:
    if key is None:
        return {"key": None}
    try:
        return {"key": key.decode("utf-8")}
    except UnicodeDecodeError:
        return {"key": base64.b64encode(key).decode("ascii"), "key_encoding": "base64"}


def _undecodable(
    out: dict[str, Any], raw: bytes, error: str, reason: str, show_pii: bool
) -> dict[str, Any]:
    hidden = not show_pii and looks_like_pii(raw.decode("utf-8", errors="replace"))
    out["error"] = error
    out["error_reason"] = reason
    out["raw"] = None if hidden else raw
    out["raw_size"] = len(raw)
    if hidden:
        out["raw_withheld"] = "looks like personal data; --show-pii shows it"
    return out


def _with_payload(value: dict[str, Any], show_pii: bool) -> dict[str, Any]:
    payload = value.get("payload")
    if not isinstance(payload, bytes):
        return value
    from streams.codec import decode_payload_any

    decoded: dict[str, Any]
    try:
        found = decode_payload_any(payload, subject="dead letter payload")
    except CodecError as exc:
        decoded = {"error": str(exc), "error_reason": exc.reason}
    except Exception as exc:  # never stop the tool
        decoded = {"error": type(exc).__name__, "error_reason": "error"}
    else:
        decoded = {"schema": found.full_name, "record": found.record}
    value = {**value, "payload_record": decoded}
    if not show_pii:
        value["payload"] = None
        value["payload_size"] = len(payload)
    return value
