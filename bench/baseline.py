"""The bare-client baseline: consume → decode → transform → encode → produce, over four hops.

``raw → enriched → scored → touch-due → sent``, the same topics (their own
prefix), partition counts, Avro codec and record shapes as leadflow, with
a field mapping as the transform (:func:`bench.records.transform`). It is
the ceiling a Python program reaches on this machine, so leadflow's
throughput is quoted as a ratio to it. Run by ``leadflow bench`` as a child
process::

    python -m bench.baseline aiokafka --bootstrap 127.0.0.1:9092 --prefix bench-x-

It prints ``ready`` once every hop is consuming, and runs until SIGTERM.

Both variants give the same guarantee as leadflow: a batch's outputs are
delivered (acks=all) before the hop reads its next batch, and offsets are
committed automatically after that. Producer settings are Faust's as
leadflow configures them (``streams/app.py``): acks=all, linger 5 ms,
16 KiB batches, no compression, the Java client's murmur2 partitioner.

- **aiokafka**: one process, one asyncio task per hop, each with its own
  consumer (manual assignment of all partitions, no group rebalance) and one
  shared producer — the same shape as one Faust worker. Batches of up to
  1,000 records from ``getmany``; the sends of a batch are awaited together.
- **confluent-kafka**: one process, one thread per hop, each with its own
  consumer and producer; ``consume(1000)`` batches and a ``flush()`` per batch.
  librdkafka does its network I/O in its own threads and releases the GIL
  while waiting, so the hops overlap; one producer per hop keeps a hop's
  flush from waiting for another hop's records.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from bench.records import HOPS, transform
from streams.codec import AvroCodec

__all__ = ["main", "run_aiokafka", "run_confluent"]

BATCH = 1000
#: Producer settings shared by both variants (Faust's, as streams/app.py sets them).
ACKS = "all"
LINGER_MS = 5
BATCH_BYTES = 16384


def _step(in_schema: str, out_schema: str, source: str) -> Callable[[bytes], bytes]:
    """payload -> payload for one hop: decode, transform, encode."""
    decode = AvroCodec(in_schema).decode
    encode = AvroCodec(out_schema).encode
    fn = transform(source)

    def step(value: bytes) -> bytes:
        return encode(fn(decode(value)))

    return step


def _hop_functions(
    prefix: str, hops: list[int] | None = None
) -> list[tuple[str, str, Callable[[bytes], bytes]]]:
    """(input topic, output topic, payload -> payload) for each hop (or the ``hops`` given)."""
    return [
        (prefix + source, prefix + target, _step(in_schema, out_schema, source))
        for index, (source, target, in_schema, out_schema) in enumerate(HOPS)
        if hops is None or index in hops
    ]


# --- aiokafka ----------------------------------------------------------------------------


async def run_aiokafka(
    bootstrap: str, prefix: str, partitions: int, hops: list[int] | None = None
) -> None:
    """Run the four hops with aiokafka until SIGTERM/SIGINT."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=ACKS,
        linger_ms=LINGER_MS,
        max_batch_size=BATCH_BYTES,
    )
    await producer.start()
    consumers = []
    tasks = []

    async def hop(consumer: Any, target: str, step: Callable[[bytes], bytes]) -> None:
        send = producer.send
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=BATCH)
            futures = [
                await send(target, step(msg.value), key=msg.key)
                for msgs in batches.values()
                for msg in msgs
            ]
            if futures:
                await asyncio.gather(*futures)

    try:
        for source, target, step in _hop_functions(prefix, hops):
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=f"{prefix}baseline-{source}",
                auto_offset_reset="earliest",
                enable_auto_commit=True,
            )
            await consumer.start()
            consumer.assign([TopicPartition(source, p) for p in range(partitions)])
            consumers.append(consumer)
            tasks.append(asyncio.create_task(hop(consumer, target, step)))
        print("ready", flush=True)
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for consumer in consumers:
            await consumer.stop()
        await producer.stop()


# --- confluent-kafka ---------------------------------------------------------------------


def run_confluent(
    bootstrap: str, prefix: str, partitions: int, hops: list[int] | None = None
) -> None:
    """Run the four hops with confluent-kafka (one thread each) until SIGTERM/SIGINT."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    stop = threading.Event()
    errors: list[BaseException] = []

    def hop(
        source: str, target: str, step: Callable[[bytes], bytes], ready: threading.Event
    ) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"{prefix}baseline-{source}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
            }
        )
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": ACKS,
                "linger.ms": LINGER_MS,
                "batch.size": BATCH_BYTES,
                "partitioner": "murmur2_random",
            }
        )
        consumer.assign([TopicPartition(source, p, OFFSET_BEGINNING) for p in range(partitions)])
        ready.set()
        produce = producer.produce
        try:
            while not stop.is_set():
                msgs = consumer.consume(BATCH, 0.1)
                if not msgs:
                    continue
                for msg in msgs:
                    if msg.error():
                        continue
                    out = step(msg.value() or b"")
                    while True:
                        try:
                            produce(target, out, msg.key())
                            break
                        except BufferError:
                            producer.poll(0.01)
                producer.flush()
        except BaseException as exc:  # report it from the main thread
            errors.append(exc)
            stop.set()
        finally:
            producer.flush(10)
            consumer.close()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = []
    for source, target, step in _hop_functions(prefix, hops):
        ready = threading.Event()
        thread = threading.Thread(target=hop, args=(source, target, step, ready), daemon=True)
        thread.start()
        ready.wait(30)
        threads.append(thread)
    print("ready", flush=True)
    while not stop.wait(0.2):
        pass
    for thread in threads:
        thread.join(15)
    if errors:
        raise errors[0]


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bench.baseline {aiokafka,confluent} --bootstrap --prefix``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("client", choices=["aiokafka", "confluent"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--hops", default="0,1,2,3", help="which hops this process runs (0-3)")
    args = parser.parse_args(argv)
    hops = [int(h) for h in args.hops.split(",")]
    if args.client == "aiokafka":
        asyncio.run(run_aiokafka(args.bootstrap, args.prefix, args.partitions, hops))
    else:
        run_confluent(args.bootstrap, args.prefix, args.partitions, hops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
