"""Read a topic from its start to the end offsets it has now (for tools and checks)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import NamedTuple

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.errors import KafkaUnavailableError
from streams.kafka_config import confluent_config

__all__ = ["TopicRecord", "read_records", "read_to_end"]


class TopicRecord(NamedTuple):
    """One record as read: where it is, its key and value, its create time."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def read_records(bootstrap: str, topic: str, timeout_s: float = 30.0) -> Iterator[TopicRecord]:
    """Yield every record now on ``topic`` (in order within each partition), then stop.

    The end is fixed when reading starts: records produced meanwhile are not
    waited for. Raises :class:`KafkaUnavailableError` when the topic is
    missing or its end offsets cannot be read (leaders still being elected
    after a broker restart are waited for, up to 15 s).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"leadflow-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52428800,
            **confluent_config(),
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaUnavailableError(f"cannot read topic {topic}: it is missing or unavailable")
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        ends = _end_offsets(consumer, parts)
        consumer.assign(parts)
        remaining = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                partition, offset = msg.partition() or 0, msg.offset() or 0
                value = msg.value()
                yield TopicRecord(
                    partition,
                    offset,
                    msg.key(),
                    None if value is None else bytes(value),
                    msg.timestamp()[1],
                )
                if offset + 1 >= ends[partition]:
                    remaining.discard(partition)
    finally:
        consumer.close()


def read_to_end(
    bootstrap: str, topic: str, timeout_s: float = 30.0
) -> Iterator[tuple[bytes | None, bytes | None]]:
    """Yield (key, value) of every record now on ``topic`` (see :func:`read_records`)."""
    for record in read_records(bootstrap, topic, timeout_s):
        yield record.key, record.value


def _end_offsets(consumer: Consumer, parts: list[TopicPartition]) -> dict[int, int]:
    """End offset of each partition, retrying while leaders are being elected."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(f"cannot read end offsets: {exc}") from exc
            time.sleep(0.5)
