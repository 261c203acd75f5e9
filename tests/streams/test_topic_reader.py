"""Reading a topic to its current end."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.errors import KafkaUnavailableError
from streams.settings import Settings
from streams.topic_reader import read_records, read_to_end


def _topic(settings: Settings, partitions: int) -> str:
    name = settings.topic_name(f"reader-{uuid.uuid4().hex[:6]}")
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
        name
    ].result()
    while name not in admin.list_topics(timeout=5).topics:
        time.sleep(0.1)
    return name


def test_reads_every_record_of_every_partition_then_stops(settings: Settings) -> None:
    name = _topic(settings, 3)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    sent = {(f"k{i}".encode(), f"v{i}".encode()) for i in range(20)}
    for key, value in sent:
        producer.produce(name, key=key, value=value)
    producer.produce(name, key=b"tomb", value=None)
    assert producer.flush(10) == 0
    started = time.monotonic()
    got = list(read_to_end(settings.bootstrap_servers, name, timeout_s=20))
    assert set(got) == sent | {(b"tomb", None)}
    assert len(got) == 21
    assert time.monotonic() - started < 15  # stops at the end, not at the timeout
    records = list(read_records(settings.bootstrap_servers, name, timeout_s=20))
    for partition in {r.partition for r in records}:
        offsets = [r.offset for r in records if r.partition == partition]
        assert offsets == list(range(len(offsets)))  # each partition whole and in order
    assert all(r.timestamp_ms > 0 for r in records)


def test_an_empty_topic_reads_nothing_at_once(settings: Settings) -> None:
    name = _topic(settings, 2)
    started = time.monotonic()
    assert list(read_to_end(settings.bootstrap_servers, name, timeout_s=20)) == []
    assert time.monotonic() - started < 10


def test_a_missing_topic_is_a_clear_error(settings: Settings) -> None:
    name = settings.topic_name(f"missing-{uuid.uuid4().hex[:6]}")
    with pytest.raises(KafkaUnavailableError, match=name):
        list(read_records(settings.bootstrap_servers, name, timeout_s=5))
