"""``leadflow smoke``: publish one record to every catalog topic and read it back.

Proves the broker, the topics and the codec work together: each record is
encoded with its topic's schema, produced with the lead id as key, consumed
back from the exact partition and offset, decoded and compared.
"""

from __future__ import annotations

import time
import uuid

import click
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.codec import AvroCodec
from streams.errors import LeadflowError
from streams.kafka_config import confluent_config
from streams.schema_examples import example_record
from streams.settings import get_settings
from streams.topics import CATALOG

__all__ = ["smoke"]


@click.command()
def smoke() -> None:
    """Publish and read back one record per topic."""
    settings = get_settings()
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "partitioner": "murmur2_random",
            **confluent_config(),
        }
    )
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"leadflow-smoke-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            **confluent_config(),
        }
    )
    started = time.monotonic()
    try:
        for spec in CATALOG:
            topic = spec.full_name(settings)
            codec = AvroCodec(spec.value_schema, subject=topic)
            lead_id = f"smoke-{uuid.uuid4().hex[:12]}"
            record = example_record(codec.schema, lead_id)
            delivered: list[tuple[int, int]] = []

            def on_delivery(
                err: object,
                msg: object,
                sink: list[tuple[int, int]] = delivered,
                where: str = topic,
            ) -> None:
                if err is not None:
                    raise LeadflowError(f"smoke: produce to {where} failed: {err}")
                sink.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

            producer.produce(
                topic, key=lead_id.encode(), value=codec.encode(record), on_delivery=on_delivery
            )
            producer.flush(15)
            if not delivered:
                raise LeadflowError(f"smoke: no delivery report from {topic} within 15 s")
            partition, offset = delivered[0]
            consumer.assign([TopicPartition(topic, partition, offset)])
            msg = consumer.poll(15)
            if msg is None or msg.error():
                raise LeadflowError(f"smoke: could not read back {topic}[{partition}]@{offset}")
            back = codec.decode(msg.value())  # type: ignore[arg-type]
            if back != record or msg.key() != lead_id.encode():
                raise LeadflowError(f"smoke: {topic} returned a different record")
            click.echo(
                f"ok  {topic:<16} {codec.schema.label:<26} partition {partition} offset {offset}"
            )
    finally:
        consumer.close()
    click.echo(f"smoke: {len(CATALOG)} topics round-tripped in {time.monotonic() - started:.1f} s")
