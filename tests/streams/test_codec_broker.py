"""Every schema round-trips through the real broker with our codec."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from fastavro import schemaless_writer

from streams.codec import MARKER, AvroCodec
from streams.schema_examples import example_record
from streams.schemas import default_registry
from streams.settings import Settings

REGISTRY = default_registry()


@pytest.fixture(scope="module")
def topic(services: object) -> Iterator[str]:
    settings: Settings = services.settings  # type: ignore[attr-defined]
    name = settings.topic_name(f"codec-{uuid.uuid4().hex[:6]}")
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result()
    yield name  # deleted with the session prefix


def _through_broker(settings: Settings, topic: str, key: bytes, payload: bytes) -> bytes:
    offsets: list[int] = []
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    producer.produce(
        topic, key=key, value=payload, on_delivery=lambda err, msg: offsets.append(msg.offset())
    )
    assert producer.flush(15) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"t-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, offsets[0])])
        msg = consumer.poll(15)
        assert msg is not None and msg.error() is None
        assert msg.key() == key
        value = msg.value()
        assert isinstance(value, bytes)
        return value
    finally:
        consumer.close()


@pytest.mark.parametrize("full_name", REGISTRY.names())
def test_every_current_schema_round_trips(settings: Settings, topic: str, full_name: str) -> None:
    codec = AvroCodec(full_name, subject=topic)
    record = example_record(codec.schema, lead_id=f"lead-{uuid.uuid4().hex[:8]}")
    payload = codec.encode(record)
    back = _through_broker(settings, topic, record["lead_id"].encode(), payload)
    assert back == payload
    assert back[:2] == MARKER and back[2:10] == codec.schema.fingerprint
    assert codec.decode(back) == record


def test_old_raw_lead_v1_on_the_broker_reads_with_the_v2_reader(
    settings: Settings, topic: str
) -> None:
    v1 = next(v for v in REGISTRY.versions("leadflow.RawLead") if v.version == 1)
    codec = AvroCodec("leadflow.RawLead", subject=topic)
    assert codec.schema.version >= 2
    old = example_record(v1, lead_id="lead-old")
    from io import BytesIO

    body = BytesIO()
    schemaless_writer(body, v1.parsed, old)
    payload = MARKER + v1.fingerprint + body.getvalue()
    decoded = codec.decode(_through_broker(settings, topic, b"lead-old", payload))
    assert decoded["lead_id"] == "lead-old"
    assert decoded["phone"] == old["phone"]
    assert decoded["source"] == "unknown"  # v2 field, filled from its default
    assert decoded["source_line"] is None
