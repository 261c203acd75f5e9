"""Read a topic from its start to the end offsets it has now (for tools and checks)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer, TopicPartition

from streams.kafka_config import confluent_config

__all__ = ["read_to_end"]


def read_to_end(
    bootstrap: str, topic: str, timeout_s: float = 30.0
) -> Iterator[tuple[bytes | None, bytes | None]]:
    """Yield (key, value) of every record now on ``topic``, partition by partition order."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"leadflow-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            **confluent_config(),
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
        consumer.assign(parts)
        remaining = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            value = msg.value()
            yield msg.key(), None if value is None else bytes(value)
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if offset + 1 >= ends[partition]:
                remaining.discard(partition)
    finally:
        consumer.close()
