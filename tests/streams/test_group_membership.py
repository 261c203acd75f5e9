"""An evicted consumer rejoins its group once poked (robinhood/faust#517)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.group_membership import FetcherView, poke, poke_reason, view_of


def view(member: bool = True, idle_s: float = 0.0, fetching: bool = True) -> FetcherView:
    return FetcherView(member=member, idle_s=idle_s, max_poll_interval_s=10.0, fetching=fetching)


def test_an_evicted_member_is_poked_once_idle_for_the_interval() -> None:
    assert poke_reason(view(member=False, idle_s=10.0, fetching=False)) == "evicted"
    assert poke_reason(view(member=False, idle_s=9.9, fetching=False)) is None


def test_a_member_not_fetching_by_design_is_poked_half_way() -> None:
    assert poke_reason(view(idle_s=5.0, fetching=False)) == "waiting"
    assert poke_reason(view(idle_s=4.9, fetching=False)) is None


def test_a_member_waiting_on_a_full_stream_buffer_stays_in_the_group() -> None:
    # Faust's backpressure: the fetcher waits until the slow stage takes an event
    waiting = FetcherView(True, 5.0, 10.0, fetching=True, backpressure=True)
    assert poke_reason(waiting) == "waiting"


def test_a_member_whose_fetcher_is_blocked_is_left_to_be_evicted() -> None:
    # work to fetch, room in every buffer, no fetch: the max poll interval exists for this
    assert poke_reason(view(idle_s=60.0, fetching=True)) is None


@dataclass
class Coordinator:
    member_id: str = "m-1"
    _max_poll_interval: float = 300.0


@dataclass
class Subscription:
    fetcher_idle_time: float = 2.5


@dataclass
class Client:
    _coordinator: Coordinator | None = field(default_factory=Coordinator)
    _subscription: Subscription = field(default_factory=Subscription)


@dataclass
class Thread:
    _consumer: Client | None = field(default_factory=Client)


@dataclass
class FaustConsumer:
    _thread: Thread = field(default_factory=Thread)
    flow_active: bool = True
    active: set[str] = field(default_factory=lambda: {"raw-0"})
    app: Any = None

    def _get_active_partitions(self) -> set[str]:
        return self.active


def test_view_of_reads_faust_and_aiokafka_state() -> None:
    seen = view_of(FaustConsumer())
    assert seen == FetcherView(member=True, idle_s=2.5, max_poll_interval_s=300.0, fetching=True)
    left = view_of(FaustConsumer(_thread=Thread(Client(Coordinator(member_id=""))), active=set()))
    assert left is not None and not left.member and not left.fetching
    assert view_of(FaustConsumer(flow_active=False)) == FetcherView(True, 2.5, 300.0, False)


class Queue:
    def __init__(self, size: int) -> None:
        self.size = size

    def full(self) -> bool:
        return self.size >= 4


def test_view_of_sees_a_full_stream_buffer() -> None:
    channels = [SimpleNamespace(_queue=Queue(1)), SimpleNamespace(_queue=None)]
    app = SimpleNamespace(topics=SimpleNamespace(_topics=channels))
    calm = view_of(FaustConsumer(app=app))
    assert calm is not None and not calm.backpressure
    channels.append(SimpleNamespace(_queue=Queue(4)))
    full = view_of(FaustConsumer(app=app))
    assert full is not None and full.backpressure


def test_view_of_is_none_before_the_consumer_started() -> None:
    assert view_of(FaustConsumer(_thread=Thread(None))) is None
    assert view_of(FaustConsumer(_thread=Thread(Client(_coordinator=None)))) is None
    assert view_of(object()) is None


async def _wait_for(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.1)
    return bool(condition())


@pytest.mark.integration
async def test_an_evicted_aiokafka_consumer_rejoins_only_when_poked(settings: Any) -> None:
    topic = settings.topic_name(f"rejoin-{uuid.uuid4().hex[:6]}")
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result()
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    producer.produce(topic, b"x")
    producer.flush(10)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=topic,
        auto_offset_reset="earliest",
        max_poll_interval_ms=2000,
        heartbeat_interval_ms=300,
        session_timeout_ms=6000,
    )
    await consumer.start()
    try:
        assert await consumer.getmany(timeout_ms=10_000)  # joined and fetched
        coordinator: Any = consumer._coordinator
        # no fetch for longer than the max poll interval: aiokafka leaves the group
        assert await _wait_for(lambda: coordinator.member_id == "", 15)
        await asyncio.sleep(2.0)
        assert coordinator.member_id == ""  # and without a fetch it never comes back
        await poke(consumer)
        assert await _wait_for(lambda: coordinator.member_id != "", 15)
        assert consumer.assignment()  # the partition is its own again
    finally:
        await consumer.stop()
        admin.delete_topics([topic])


async def test_fetcher_waits_in_names_the_await_point_of_fausts_fetcher() -> None:
    from streams.group_membership import fetcher_waits_in

    class Fetcher:  # the qualname of Faust's fetcher task is Fetcher._fetcher
        async def _fetcher(self) -> None:
            await self._drain()

        async def _drain(self) -> None:
            await asyncio.sleep(30)

    assert fetcher_waits_in() == "no fetcher task"

    async def service_wrapper() -> None:  # mode runs service tasks inside a wrapper
        await Fetcher()._fetcher()

    task = asyncio.create_task(service_wrapper())
    await asyncio.sleep(0)
    try:
        where = fetcher_waits_in()
        assert "_fetcher:" in where and "_drain:" in where and "sleep:" in where
    finally:
        task.cancel()
