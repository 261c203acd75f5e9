"""Consumer lag read from the real broker."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streams.admin import ensure_topics
from streams.lag import (
    STAGE_INPUT_TOPICS,
    PartitionLag,
    committed_offsets,
    group_lag,
    group_member_count,
)
from streams.settings import Settings


def test_lag_counts_from_log_start_when_nothing_is_committed() -> None:
    assert PartitionLag("t", 0, None, 5, 12).lag == 7
    assert PartitionLag("t", 0, 10, 5, 12).lag == 2
    assert PartitionLag("t", 0, 2, 5, 12).lag == 7  # committed below the log start


def test_every_stage_reads_a_catalog_topic() -> None:
    from streams.topics import CATALOG

    names = {spec.name for spec in CATALOG}
    assert set(STAGE_INPUT_TOPICS.values()) <= names


def test_group_lag_follows_commits_on_the_broker(settings: Settings) -> None:
    ensure_topics(settings)
    topic = settings.topic_name("raw")
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for i in range(5):
        producer.produce(topic, key=b"k", value=b"v%d" % i, partition=0)
    producer.flush(10)
    group = f"lag-test-{uuid.uuid4().hex[:8]}"
    before = {
        (r.topic, r.partition): r for r in group_lag(settings.bootstrap_servers, group, [topic])
    }
    assert before[(topic, 0)].lag >= 5
    assert before[(topic, 0)].committed is None
    end = before[(topic, 0)].end

    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, end - 2)], asynchronous=False)
    finally:
        consumer.close()
    after = {
        (r.topic, r.partition): r for r in group_lag(settings.bootstrap_servers, group, [topic])
    }
    assert after[(topic, 0)].committed == end - 2
    assert after[(topic, 0)].lag == 2
    assert committed_offsets(settings.bootstrap_servers, group, [(topic, 0), (topic, 1)]) == {
        (topic, 0): end - 2,
        (topic, 1): None,
    }
    assert committed_offsets(settings.bootstrap_servers, group, []) == {}
    assert group_member_count(settings.bootstrap_servers, group) == 0


def test_unknown_topics_are_skipped(settings: Settings) -> None:
    assert group_lag(settings.bootstrap_servers, "g", [settings.topic_name("no-such-topic")]) == []


def test_log_start_and_end_come_from_the_broker_for_every_partition(settings: Settings) -> None:
    # group_lag reads all watermarks in one batch; they must be the very
    # offsets the one-partition call reports, a moved log start included.
    ensure_topics(settings)
    topic = settings.topic_name("enriched")
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for i in range(12):
        producer.produce(topic, key=b"k", value=b"v%d" % i, partition=i % 3)
    producer.flush(10)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    for future in admin.delete_records([TopicPartition(topic, 1, 2)]).values():
        future.result(10)
    rows = {r.partition: r for r in group_lag(settings.bootstrap_servers, "wm-test", [topic])}
    probe = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "wm-test"})
    try:
        for partition, row in rows.items():
            low, high = probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            assert (row.start, row.end) == (low, high)
    finally:
        probe.close()
    assert rows[1].start >= 2
    assert all(rows[p].end >= 4 for p in (0, 1, 2))
