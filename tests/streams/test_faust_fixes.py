"""Faust must not ack an event it skipped because the worker was stopping or rebalancing."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import yarl
from faust.events import Event

from streams import faust_fixes


@dataclass
class FlowControl:
    active: bool = True

    def is_active(self) -> bool:
        return self.active


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass(eq=False)
class StubMessage:
    generation_id: int = 1
    offset: int = 10
    tp: TP = TP("touch-due", 3)
    acked: bool = False
    acked_by: list[Any] = field(default_factory=list)

    def ack(self, consumer: Any) -> bool:
        self.acked_by.append(consumer)
        return True


@dataclass
class StubConsumer:
    assigned: set[TP] = field(default_factory=lambda: {TP("touch-due", 3)})
    sought: list[tuple[TP, int]] = field(default_factory=list)
    _unacked_messages: set[Any] = field(default_factory=set)

    def assignment(self) -> set[TP]:
        return self.assigned

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


@dataclass
class StubApp:
    flow_control: FlowControl = field(default_factory=FlowControl)
    consumer_generation_id: int = 1
    consumer: StubConsumer = field(default_factory=StubConsumer)


class StubStream:
    async def ack(self, event: Any) -> bool:
        return bool(event.ack())


def event(app: StubApp, message: StubMessage) -> Any:
    return Event(app, None, None, {}, message)  # type: ignore[arg-type]


def test_the_worker_app_installs_the_fix() -> None:
    from streams.app import app

    assert app is not None
    assert faust_fixes.installed()


def test_acks_pass_while_flow_control_is_active_and_the_generation_is_current() -> None:
    faust_fixes.install()
    app, message = StubApp(), StubMessage()
    assert event(app, message).ack() is True
    assert message.acked_by == [app.consumer]


async def test_a_skipped_event_is_set_aside_and_redelivered_after_the_rebalance() -> None:
    faust_fixes.install()
    app = StubApp(flow_control=FlowControl(active=False))
    late, early = StubMessage(offset=12), StubMessage(offset=10)
    app.consumer._unacked_messages |= {late, early}
    assert event(app, late).ack() is False
    assert event(app, early).ack() is False
    assert late.acked_by == early.acked_by == []  # never committable
    assert app.consumer._unacked_messages == set()  # so wait_empty does not wait for them
    assert await faust_fixes.redeliver_set_aside(app) == 1
    assert app.consumer.sought == [(TP("touch-due", 3), 10)]  # from the lowest one
    assert await faust_fixes.redeliver_set_aside(app) == 0  # once


async def test_a_set_aside_partition_that_moved_to_another_worker_is_forgotten() -> None:
    faust_fixes.install()
    app = StubApp(flow_control=FlowControl(active=False))
    app.consumer.assigned = set()
    assert event(app, StubMessage()).ack() is False
    assert await faust_fixes.redeliver_set_aside(app) == 0
    assert app.consumer.sought == []


async def test_an_older_generation_message_is_redelivered_at_once() -> None:
    faust_fixes.install()
    app, message = StubApp(consumer_generation_id=2), StubMessage(generation_id=1, offset=7)
    assert event(app, message).ack() is False
    assert message.acked_by == []
    for _ in range(3):
        await asyncio.sleep(0)
    assert app.consumer.sought == [(TP("touch-due", 3), 7)]


async def test_a_finished_event_is_acked_even_while_flow_control_is_suspended() -> None:
    faust_fixes.install()
    app, message = StubApp(flow_control=FlowControl(active=False)), StubMessage()
    assert await faust_fixes.ack_processed(StubStream(), event(app, message)) is True
    assert message.acked_by == [app.consumer]
    assert event(app, StubMessage()).ack() is False  # the exemption ends with the call


def test_install_is_idempotent() -> None:
    faust_fixes.install()
    guarded = Event.ack
    faust_fixes.install()
    assert Event.ack is guarded


class NotATerminal:
    def isatty(self) -> bool:
        return False


class Spinner:
    file = NotATerminal()


def test_the_spinner_never_turns_the_root_logger_to_debug_off_a_terminal() -> None:
    import logging

    from faust.worker import Worker

    faust_fixes.install()
    logger = logging.getLogger("leadflow-test-root")
    logger.setLevel(logging.WARNING)

    class FakeWorker:
        spinner = Spinner()

    Worker._setup_spinner_handler(FakeWorker(), logger, logging.WARNING)  # type: ignore[arg-type]
    assert logger.level == logging.WARNING
    assert logger.handlers == []


class CommitState:
    """The fields of Faust's consumer that ``_new_offset`` reads and writes."""

    def __init__(self, committed: int | None, acked: list[int]) -> None:
        from collections import defaultdict

        from intervaltree import IntervalTree

        self.tp = TP("sent", 5)
        self._committed_offset: dict[Any, int | None] = defaultdict(lambda: None)
        self._committed_offset[self.tp] = committed
        self._acked: dict[Any, list[int]] = defaultdict(list)
        self._acked[self.tp] = list(acked)
        self._acked_index: dict[Any, set[int]] = defaultdict(set)
        self._acked_index[self.tp] = set(acked)
        self._gap: dict[Any, Any] = defaultdict(IntervalTree)
        self.sought: list[tuple[Any, int]] = []

    async def seek(self, tp: Any, offset: int) -> None:
        self.sought.append((tp, offset))

    def assignment(self) -> set[Any]:
        return {self.tp}


@pytest.fixture(autouse=True)
def _fresh_fix_state() -> None:
    """What the fixes remember per partition starts empty in every test."""
    for remembered in (
        faust_fixes._held,
        faust_fixes._set_aside,
        faust_fixes._start,
        faust_fixes._sought_back,
    ):
        remembered.clear()


def hold(tp: TP, *offsets: int) -> None:
    app = StubApp(flow_control=FlowControl(active=False))
    for offset in offsets:
        assert event(app, StubMessage(offset=offset, tp=tp)).ack() is False


def test_faust_alone_commits_over_a_missing_offset_at_the_head() -> None:
    """The bug the guard exists for: one hole right after the committed offset."""
    state = CommitState(committed=10, acked=[11, 12])
    assert faust_fixes._original_new_offset(state, state.tp) == 13  # 10 was never handled


async def test_no_commit_at_or_past_an_offset_set_aside_until_it_is_handled() -> None:
    faust_fixes.install()
    state = CommitState(committed=10, acked=[11, 12])
    hold(state.tp, 10)
    assert faust_fixes._new_offset_below_held(state, state.tp) is None
    assert state._acked[state.tp] == [11, 12]  # nothing lost meanwhile
    # delivered again and handled: the commit moves past it
    app = StubApp()
    redelivered = StubMessage(offset=10, tp=state.tp)
    assert await faust_fixes.ack_processed(StubStream(), event(app, redelivered)) is True
    state._acked[state.tp].insert(0, 10)  # what Faust's consumer.ack records
    assert faust_fixes._new_offset_below_held(state, state.tp) == 13
    faust_fixes.forget_partitions([state.tp])


def test_a_fresh_partition_commits_only_up_to_the_first_offset_set_aside() -> None:
    faust_fixes.install()
    state = CommitState(committed=None, acked=[0, 1, 3, 4])
    faust_fixes._start[state.tp] = 0  # learned at assignment: the log start
    hold(state.tp, 2)
    assert faust_fixes._original_new_offset(CommitState(None, [2, 3]), state.tp) == 4  # Faust
    assert faust_fixes._new_offset_below_held(state, state.tp) == 2
    assert state._acked[state.tp] == [3, 4]
    faust_fixes.forget_partitions([state.tp])  # revoked: the next owner starts at 2
    assert state.tp not in faust_fixes._held


async def test_no_commit_while_the_offset_after_the_last_commit_was_never_handled() -> None:
    faust_fixes.install()
    assert faust_fixes._new_offset_below_held(CommitState(10, [11, 12]), TP("sent", 5)) is None
    assert faust_fixes._new_offset_below_held(CommitState(0, [1, 2]), TP("sent", 5)) is None
    assert faust_fixes._new_offset_below_held(CommitState(10, [10, 11, 13]), TP("sent", 5)) == 12


async def test_a_record_fetched_below_the_read_offset_is_delivered_not_dropped(
    monkeypatch: Any,
) -> None:
    """Faust's fetch loop drops a record below the partition's read offset;
    the read offset is put back so the record reaches its stage."""
    tp = TP("enriched", 2)
    fetched = [StubMessage(offset=o, tp=tp) for o in (5, 6)]

    async def original(self: Any, timeout: float) -> Any:
        for message in fetched:
            yield message.tp, message

    class Fetching:
        def __init__(self) -> None:
            self._read_offset: dict[TP, int | None] = {tp: 900}  # from the last assignment

    monkeypatch.setattr(faust_fixes, "_original_getmany", original)
    consumer = Fetching()
    seen = []
    async for got_tp, message in faust_fixes._getmany_delivering_rereads(consumer, 1.0):
        # what the fetch loop then does: drop below the read offset, else deliver
        last = consumer._read_offset.get(got_tp)
        assert last is None or message.offset >= last
        seen.append(message.offset)
        consumer._read_offset[got_tp] = message.offset
    assert seen == [5, 6]


async def test_offsets_the_fetch_skipped_are_never_counted_as_handled() -> None:
    state = CommitState(10, [10, 11])
    await faust_fixes._gap_not_filled(state, state.tp, 12, 20)
    state._acked[state.tp] += [21, 22]
    assert not state._gap[state.tp]
    assert faust_fixes._new_offset_below_held(state, state.tp) == 12  # stops at the skip


async def test_a_never_committed_partition_commits_only_from_where_it_starts() -> None:
    """After a rebalance Faust's consumer was seen starting a partition the
    group never committed at its end: records already there were skipped."""
    faust_fixes.install()
    state = CommitState(committed=None, acked=[525, 526])
    assert faust_fixes._new_offset_below_held(state, state.tp) is None  # start not known yet
    faust_fixes._start[state.tp] = 0
    assert faust_fixes._new_offset_below_held(state, state.tp) is None
    await asyncio.sleep(0)
    assert state.sought == [(state.tp, 0)]  # the skipped head is fetched again
    assert faust_fixes._new_offset_below_held(state, state.tp) is None
    await asyncio.sleep(0)
    assert state.sought == [(state.tp, 0)]  # not again at every commit
    state._acked[state.tp] = list(range(527))  # delivered again and handled
    assert faust_fixes._new_offset_below_held(state, state.tp) == 527


async def test_the_start_of_each_assigned_partition_is_learned_from_the_group(
    settings: Any,
) -> None:
    """The committed offset where the group has one, else the log start."""
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = settings.topic_name(f"start-{uuid.uuid4().hex[:6]}")
    group = settings.topic_name(f"start-{uuid.uuid4().hex[:6]}")
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result()
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for i in range(6):
        producer.produce(topic, value=b"x", partition=i % 2)
    assert producer.flush(10) == 0
    committer = KafkaConsumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group})
    committer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    committer.close()

    class Topics:
        def acks_enabled_for(self, name: str) -> bool:
            return True

    class Conf:
        id = group
        broker = (yarl.URL(f"kafka://{settings.bootstrap_servers}"),)

    class App:
        topics = Topics()
        conf = Conf()

    assigned = {TP(topic, 0), TP(topic, 1)}
    assert await faust_fixes.learn_start_offsets(App(), assigned) == 2
    assert faust_fixes._start[TP(topic, 0)] == 2  # committed
    assert faust_fixes._start[TP(topic, 1)] == 0  # never committed: the log start


async def test_after_a_commit_a_revoke_does_not_make_later_acks_look_like_a_skipped_head() -> None:
    """Faust forgets its committed offset when the partition is revoked; acks of
    the batch in flight still arrive. They follow the last commit: no seek."""
    faust_fixes.install()
    state = CommitState(committed=None, acked=[0, 1, 2])
    faust_fixes._start[state.tp] = 0
    assert faust_fixes._new_offset_below_held(state, state.tp) == 3
    state._committed_offset[state.tp] = None  # revoked: Faust drops what it committed
    state._acked[state.tp] = [3, 4]
    assert faust_fixes._new_offset_below_held(state, state.tp) == 5
    await asyncio.sleep(0)
    assert state.sought == []


@dataclass
class ChangelogMessage:
    value: bytes | None
    partition: int = 4


@dataclass
class ChangelogEvent:
    key: bytes
    value: dict[str, Any] | None
    message: ChangelogMessage


def test_a_changelog_replay_never_puts_an_older_state_over_a_newer_one() -> None:
    """After a rebalance Faust replays the changelog into the live table; a
    record older than the value there (a write the replay raced) is skipped."""
    from faust.stores.memory import Store as MemoryStore

    faust_fixes.install()
    store = MemoryStore.__new__(MemoryStore)
    store.data = {b"c\x1fa": {"state": "completed", "version": 9}}
    store._key_partition = {}

    def event(key: bytes, state: str, version: int) -> ChangelogEvent:
        return ChangelogEvent(key, {"state": state, "version": version}, ChangelogMessage(b"avro"))

    store.apply_changelog_batch(
        [
            event(b"c\x1fa", "in_sequence", 8),  # older than the live value: skipped
            event(b"c\x1fb", "in_sequence", 3),  # not in the table yet: applied
            event(b"c\x1fb", "replied", 4),
        ],
        to_key=lambda k: k,
        to_value=lambda v: v,
    )
    assert store.data[b"c\x1fa"] == {"state": "completed", "version": 9}
    assert store.data[b"c\x1fb"] == {"state": "replied", "version": 4}
    assert store._key_partition == {b"c\x1fa": 4, b"c\x1fb": 4}
    store.apply_changelog_batch(
        [event(b"c\x1fa", "replied", 10)], to_key=lambda k: k, to_value=lambda v: v
    )
    assert store.data[b"c\x1fa"] == {"state": "replied", "version": 10}  # newer: applied


async def test_a_seek_runs_in_the_consumer_thread() -> None:
    import threading

    from faust.transport.consumer import ThreadDelegateConsumer

    faust_fixes.install()
    seen: list[tuple[str, Any, int]] = []

    class ConsumerThread:
        """Runs a coroutine function on a thread of its own, as Faust's consumer thread does."""

        def seek(self, tp: Any, offset: int) -> None:
            seen.append((threading.current_thread().name, tp, offset))

        async def call_thread(self, fun: Any) -> Any:
            return await asyncio.to_thread(lambda: asyncio.run(fun()))

    consumer = type("Stub", (), {"_thread": ConsumerThread()})()
    await ThreadDelegateConsumer._seek(consumer, TP("touch-due", 0), 15)  # type: ignore[arg-type]
    assert len(seen) == 1
    name, tp, offset = seen[0]
    assert (tp, offset) == (TP("touch-due", 0), 15)
    assert name != threading.current_thread().name  # not on the app's thread
