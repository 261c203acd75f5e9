"""Reading the ``dead-letter`` topic (for reports, tests and ``leadflow dlq``).

Every dead letter is identified by where it sits on the dead-letter topic:
its partition and offset, written ``3:1042`` (:class:`DeadLetterId`). The
records are ``leadflow.DeadLetter`` (``schemas/dead_letter.v1.avsc``).

Reads stop at the end offsets the topic has when the read starts, so a
listing is a snapshot even while stages keep dead-lettering.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streams.codec import AvroCodec
from streams.errors import CodecError, ConfigError, KafkaUnavailableError
from streams.kafka_config import confluent_config
from streams.settings import Settings

__all__ = [
    "DeadLetter",
    "DeadLetterId",
    "dead_letter_topic",
    "fetch_dead_letters",
    "iter_dead_letters",
    "read_dead_letters",
]

log = logging.getLogger(__name__)

_ID = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
#: Records are produced after their ``failed_at``; this margin absorbs clock skew
#: between the worker that failed and the record timestamp when seeking by time.
_SEEK_MARGIN = timedelta(minutes=5)
_BATCH = 500


@dataclass(frozen=True, order=True)
class DeadLetterId:
    """Where a dead letter sits on the dead-letter topic: ``partition:offset``."""

    partition: int
    offset: int

    @classmethod
    def parse(cls, text: str) -> DeadLetterId:
        """``"3:1042"`` -> ``DeadLetterId(3, 1042)``; :class:`ConfigError` otherwise."""
        match = _ID.match(text)
        if match is None:
            raise ConfigError(f"{text!r} is not a dead-letter id like 3:1042 (partition:offset)")
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"


@dataclass(frozen=True)
class DeadLetter:
    """One decoded dead letter and where it sits on the dead-letter topic."""

    id: DeadLetterId
    #: The ``leadflow.DeadLetter`` record as decoded (``failed_at`` an aware datetime).
    record: dict[str, Any]

    @property
    def stage(self) -> str:
        """Stage that gave up on the record."""
        return str(self.record["stage"])

    @property
    def reason(self) -> str:
        """Label-safe reason, e.g. ``unknown_campaign``."""
        return str(self.record["reason"])

    @property
    def campaign_id(self) -> str | None:
        """Campaign of the failed record, when it could be read."""
        value = self.record.get("campaign_id")
        return None if value is None else str(value)

    @property
    def lead_id(self) -> str | None:
        """Lead of the failed record, when it could be read."""
        value = self.record.get("lead_id")
        return None if value is None else str(value)

    @property
    def original_topic(self) -> str:
        """Full name of the topic the failed record was read from."""
        return str(self.record["original_topic"])

    @property
    def attempt(self) -> int:
        """Attempts made before this dead letter, 1-based."""
        return int(self.record["attempt"])

    @property
    def failed_at(self) -> datetime:
        """When the last attempt failed (UTC)."""
        value = self.record["failed_at"]
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.fromtimestamp(int(value) / 1000, UTC)

    @property
    def history(self) -> list[dict[str, Any]]:
        """Earlier failed attempts, oldest first (the last one is the top-level fields)."""
        return list(self.record.get("history") or [])


def dead_letter_topic(settings: Settings) -> str:
    """Full name of the dead-letter topic."""
    return settings.topic_name("dead-letter")


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            **confluent_config(),
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"leadflow-dlq-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "log_level": 3,
        }
    )


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    try:
        meta = consumer.list_topics(topic, timeout=10)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot read metadata of {topic}: {exc}") from exc
    info = meta.topics.get(topic)
    if info is None or info.error is not None:
        raise KafkaUnavailableError(f"topic {topic} does not exist")
    return sorted(info.partitions)


def _watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """(low, high) offsets; retried briefly while a new topic's leaders are elected."""
    deadline = time.monotonic() + 10
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
            return int(low), int(high)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"cannot read offsets of {topic}[{partition}]: {exc}"
                ) from exc
            time.sleep(0.2)


def _decode(codec: AvroCodec, msg: Message) -> DeadLetter | None:
    ident = DeadLetterId(msg.partition() or 0, msg.offset() or 0)
    value = msg.value()
    if value is None:
        log.warning("dead letter %s has no value; skipped", ident)
        return None
    try:
        return DeadLetter(ident, codec.decode(bytes(value)))
    except CodecError as exc:
        log.warning("dead letter %s does not decode (%s); skipped", ident, exc.reason)
        return None


def iter_dead_letters(
    settings: Settings,
    *,
    since: datetime | None = None,
    timeout_s: float = 30.0,
) -> Iterator[DeadLetter]:
    """Every dead letter now on the topic, partition by partition in offset order.

    With ``since``, partitions are read from the first record whose Kafka
    timestamp is at or after ``since`` minus a small margin (a dead letter is
    produced after it fails, so none failing after ``since`` is skipped);
    filtering on ``failed_at`` is the caller's. Records that do not decode
    are logged and skipped.
    """
    topic = dead_letter_topic(settings)
    codec = AvroCodec("leadflow.DeadLetter", subject=topic)
    consumer = _consumer(settings)
    try:
        parts = _partitions(consumer, topic)
        ends: dict[int, int] = {}
        starts: dict[int, int] = {}
        for p in parts:
            starts[p], ends[p] = _watermarks(consumer, topic, p)
        if since is not None:
            at_ms = int((since - _SEEK_MARGIN).timestamp() * 1000)
            try:
                found = consumer.offsets_for_times(
                    [TopicPartition(topic, p, at_ms) for p in parts], timeout=10
                )
            except KafkaException as exc:
                raise KafkaUnavailableError(f"cannot look up offsets by time: {exc}") from exc
            for tp in found:
                # -1: no record that new; nothing to read on this partition.
                starts[tp.partition] = ends[tp.partition] if tp.offset < 0 else tp.offset
        remaining = {p for p in parts if starts[p] < ends[p]}
        if not remaining:
            return
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(remaining)])
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"reading {topic} timed out after {timeout_s:.0f} s "
                    f"({len(remaining)} partitions unfinished)"
                )
            for msg in consumer.consume(_BATCH, timeout=0.5):
                if msg.error():
                    continue
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if partition not in remaining or offset >= ends[partition]:
                    continue
                dead = _decode(codec, msg)
                if dead is not None:
                    yield dead
                if offset + 1 >= ends[partition]:
                    remaining.discard(partition)
                    consumer.incremental_unassign([TopicPartition(topic, partition)])
    finally:
        consumer.close()


def fetch_dead_letters(
    settings: Settings, ids: Iterable[DeadLetterId], timeout_s: float = 20.0
) -> dict[DeadLetterId, DeadLetter]:
    """The dead letters at ``ids``; an id past the end or already deleted is absent."""
    wanted = set(ids)
    if not wanted:
        return {}
    topic = dead_letter_topic(settings)
    codec = AvroCodec("leadflow.DeadLetter", subject=topic)
    consumer = _consumer(settings)
    found: dict[DeadLetterId, DeadLetter] = {}
    try:
        parts = set(_partitions(consumer, topic))
        by_partition: dict[int, list[int]] = {}
        for ident in wanted:
            if ident.partition in parts:
                by_partition.setdefault(ident.partition, []).append(ident.offset)
        for partition, offsets in sorted(by_partition.items()):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            todo = {o for o in offsets if low <= o < high}
            deadline = time.monotonic() + timeout_s
            for offset in sorted(todo):
                if offset not in todo:
                    continue  # already met while reading an earlier one
                consumer.assign([TopicPartition(topic, partition, offset)])
                while offset in todo and time.monotonic() < deadline:
                    for msg in consumer.consume(_BATCH, timeout=0.5):
                        if msg.error():
                            continue
                        got = msg.offset() or 0
                        if got in todo:
                            todo.discard(got)
                            dead = _decode(codec, msg)
                            if dead is not None:
                                found[dead.id] = dead
                        if got >= offset:
                            # Compacted or aborted offsets never arrive; stop at the
                            # first record at or past the one asked for.
                            todo.discard(offset)
                consumer.unassign()
    finally:
        consumer.close()
    return found


def read_dead_letters(settings: Settings, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Every record on ``dead-letter`` now (up to the end offsets), decoded."""
    return [d.record for d in iter_dead_letters(settings, timeout_s=timeout_s)]
