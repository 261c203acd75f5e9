"""StageRunner (agents/runtime.py): decode, dead letters, retries, durable outputs, then acks.

No broker and no Postgres: a fake stage, fake events, fake producers and a fake
stream. ``asyncio.sleep`` is patched so backoff is counted, never waited for.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from fakes import FakeEvent, FakeMessage, FakeProducer, inbound_record

from agents.runtime import (
    ATTEMPT_HEADER,
    BatchResult,
    Item,
    Output,
    Stage,
    StageRunner,
    error_reason,
    hold_until_done,
)
from streams import metrics, settings
from streams.codec import AvroCodec
from streams.errors import (
    CodecError,
    DatabaseUnavailableError,
    IllegalTransitionError,
    LeadflowError,
    NotSingleObjectError,
    ProviderError,
    TransientError,
)

IN_TOPIC = "in"
DLQ = "dlq"
OUT = "out"
CODEC = AvroCodec("leadflow.InboundEvent", subject=IN_TOPIC)
DEAD = AvroCodec("leadflow.DeadLetter", subject=DLQ)
_offsets = itertools.count(1000)

# --- helpers -------------------------------------------------------------------------------


def event(
    lead_id: str = "l1",
    *,
    partition: int = 0,
    offset: int | None = None,
    key: bytes | None = None,
    value: Any = None,
    headers: list[tuple[str, bytes]] | None = None,
    campaign_id: str = "c1",
) -> FakeEvent:
    """A fake Faust event; ``value`` overrides the encoded InboundEvent (bad payloads)."""
    payload = (
        CODEC.encode(inbound_record(lead_id=lead_id, campaign_id=campaign_id))
        if value is None
        else value
    )
    message = FakeMessage(
        IN_TOPIC,
        partition,
        next(_offsets) if offset is None else offset,
        lead_id.encode() if key is None else key,
        payload,
        [] if headers is None else headers,
    )
    return FakeEvent(message)


class EchoStage(Stage):
    """Echoes each item to ``out`` (value = lead id); configurable failures.

    - ``raise_next``: exceptions raised by the next calls, one per call;
    - ``poison``: lead ids whose presence in a call makes the whole call raise;
    - ``reject``: lead id -> exception put in ``failures`` (a per-item failure).
    """

    name = "echo"
    input_schema = "leadflow.InboundEvent"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.items: list[Item] = []
        self.raise_next: list[BaseException] = []
        self.poison: dict[str, BaseException] = {}
        self.reject: dict[str, BaseException] = {}
        self.on_call: Callable[[Sequence[Item]], None] | None = None

    async def handle(self, items: Sequence[Item]) -> BatchResult:
        self.calls.append([i.lead_id for i in items])
        self.items.extend(items)
        if self.on_call is not None:
            self.on_call(items)
        if self.raise_next:
            raise self.raise_next.pop(0)
        for item in items:
            if item.lead_id in self.poison:
                raise self.poison[item.lead_id]
        result = BatchResult()
        for item in items:
            if item.lead_id in self.reject:
                result.failures.append((item, self.reject[item.lead_id]))
            else:
                result.outputs.append(Output(OUT, item.key, item.lead_id.encode()))
        return result


def _take(stream: Any, max_: int, within: float) -> AsyncGenerator[list[Any], None]:
    """The fake streams below hand out their batches as ``noack_take`` did."""
    batches: AsyncGenerator[list[Any], None] = stream.noack_take(max_, within)
    return batches


def runner(stage: Stage, producer: Any, **kwargs: Any) -> StageRunner:
    return StageRunner(
        stage, producer=producer, input_topic=IN_TOPIC, dead_letter_topic=DLQ, take=_take, **kwargs
    )


def dead_letters(producer: FakeProducer) -> list[dict[str, Any]]:
    return [DEAD.decode(s.value) for s in producer.to(DLQ)]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Patch ``asyncio.sleep``: record each delay, yield once, never wait."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, result: Any = None) -> Any:
        delays.append(delay)
        if len(delays) > 200:
            raise RuntimeError("runaway retry loop")
        await real_sleep(0)
        return result

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    return delays


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """``random.random() == 0.5``, so a jittered delay equals its base delay."""
    monkeypatch.setattr(random, "random", lambda: 0.5)


# --- a normal batch ------------------------------------------------------------------------


async def test_items_are_decoded_with_their_origin() -> None:
    stage, producer = EchoStage(), FakeProducer()
    ev = event("l7", partition=3, offset=77, key=b"l7", headers=[(ATTEMPT_HEADER, b"2")])
    await runner(stage, producer).process([ev])
    [item] = stage.items
    assert item.event is ev
    assert (item.topic, item.partition, item.offset, item.key) == (IN_TOPIC, 3, 77, b"l7")
    assert item.payload == ev.message.value
    assert item.attempt == 2
    assert item.record["lead_id"] == "l7"
    assert item.lead_id == "l7"
    assert item.campaign_id == "c1"


async def test_outputs_are_produced_as_given() -> None:
    class Fixed(EchoStage):
        async def handle(self, items: Sequence[Item]) -> BatchResult:
            return BatchResult(
                outputs=[
                    Output("a", b"k1", b"v1", partition=4, headers=(("h", b"1"),)),
                    Output("b", None, b"v2"),
                ]
            )

    producer = FakeProducer()
    run = runner(Fixed(), producer)
    await run.process([event("l1")])
    sent = [(s.topic, s.key, s.value, s.partition, s.headers) for s in producer.sent]
    assert sent == [("a", b"k1", b"v1", 4, [("h", b"1")]), ("b", None, b"v2", None, None)]
    assert (run.processed, run.dead_lettered, run.transient_retries) == (1, 0, 0)


async def test_empty_batch_produces_nothing_and_skips_the_stage() -> None:
    stage, producer = EchoStage(), FakeProducer()
    await runner(stage, producer).process([])
    assert stage.calls == []
    assert producer.sent == []


# --- payloads that do not decode ------------------------------------------------------------


async def test_undecodable_payload_is_dead_lettered_with_its_origin() -> None:
    stage, producer = EchoStage(), FakeProducer()
    good = event("l1")
    bad = event(
        "l9",
        partition=5,
        offset=42,
        key=b"lead-9",
        value=b"not avro at all",
        headers=[("trace", b"x"), (ATTEMPT_HEADER, b"3")],
    )
    run = runner(stage, producer)
    await run.process([good, bad])

    assert stage.calls == [["l1"]]  # the bad event never reaches the stage
    assert [s.value for s in producer.to(OUT)] == [b"l1"]
    [sent] = producer.to(DLQ)
    assert sent.key == b"lead-9"
    [dl] = dead_letters(producer)
    assert dl["original_topic"] == IN_TOPIC
    assert dl["original_partition"] == 5
    assert dl["original_offset"] == 42
    assert dl["original_key"] == b"lead-9"
    assert dl["payload"] == b"not avro at all"
    assert dl["attempt"] == 3
    assert dl["stage"] == "echo"
    assert dl["reason"] == "not_avro"
    assert dl["error_class"] == "NotSingleObjectError"
    assert "\n" not in dl["error_message"]
    assert dl["lead_id"] == "lead-9"  # from the key: the record could not be read
    assert dl["campaign_id"] is None
    assert dl["history"] == []
    assert (run.processed, run.dead_lettered) == (2, 1)


@pytest.mark.parametrize(
    ("value", "reason", "error_class"),
    [
        (b"", "not_avro", "NotSingleObjectError"),
        (CODEC.encode(inbound_record())[:-5], "truncated", "TruncatedPayloadError"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown_schema", "UnknownFingerprintError"),
        (CODEC.encode(inbound_record()) + b"xx", "schema_mismatch", "SchemaMismatchError"),
    ],
    ids=["empty", "truncated", "unknown-fingerprint", "trailing-bytes"],
)
async def test_each_codec_failure_is_dead_lettered_with_its_reason(
    value: bytes, reason: str, error_class: str
) -> None:
    stage, producer = EchoStage(), FakeProducer()
    await runner(stage, producer).process([event("l1", value=value)])
    [dl] = dead_letters(producer)
    assert (dl["reason"], dl["error_class"]) == (reason, error_class)
    assert dl["payload"] == value
    assert stage.calls == []


async def test_an_oversized_record_is_dead_lettered_undecoded_with_its_first_bytes() -> None:
    stage, producer = EchoStage(), FakeProducer()
    huge = CODEC.encode(inbound_record(body="x" * 2_000_000))
    run = runner(stage, producer, max_record_bytes=1_000)
    await run.process([event("l1", value=huge), event("l2")])

    assert stage.calls == [["l2"]]  # the rest of the batch goes on
    [dl] = dead_letters(producer)
    assert (dl["reason"], dl["error_class"]) == ("record_too_large", "RecordTooLargeError")
    assert dl["payload"] == huge[:1_000]
    assert str(len(huge)) in dl["error_message"]
    assert len(producer.to(DLQ)[0].value) < 2_000  # the dead letter fits in a Kafka message


async def test_tombstone_value_is_dead_lettered_with_empty_payload() -> None:
    stage, producer = EchoStage(), FakeProducer()
    ev = event("l1", key=b"l1")
    ev.message.value = None  # type: ignore[assignment]
    await runner(stage, producer).process([ev])
    [dl] = dead_letters(producer)
    assert dl["payload"] == b""
    assert dl["reason"] == "not_avro"
    assert dl["lead_id"] == "l1"


async def test_keyless_undecodable_event_has_no_lead_id() -> None:
    producer = FakeProducer()
    ev = event("l1", key=b"", value=b"junk")
    ev.message.key = None
    await runner(EchoStage(), producer).process([ev])
    [sent] = producer.to(DLQ)
    assert sent.key is None
    [dl] = dead_letters(producer)
    assert dl["original_key"] is None
    assert dl["lead_id"] is None


@pytest.mark.parametrize(
    ("headers", "attempt"),
    [
        (None, 1),
        ([], 1),
        ([(ATTEMPT_HEADER, b"4")], 4),
        ([(ATTEMPT_HEADER, b"soon")], 1),
        ([("x-other", b"7")], 1),
        ([(ATTEMPT_HEADER, b"2"), ("x-other", b"9")], 2),
    ],
    ids=["none", "empty", "four", "not-a-number", "other-header", "among-others"],
)
async def test_attempt_comes_from_the_attempt_header(
    headers: list[tuple[str, bytes]] | None, attempt: int
) -> None:
    producer = FakeProducer()
    ev = event("l1", value=b"junk")
    ev.message.headers = headers  # type: ignore[assignment]
    await runner(EchoStage(), producer).process([ev])
    [dl] = dead_letters(producer)
    assert dl["attempt"] == attempt


# --- per-item failures reported by the stage ------------------------------------------------


async def test_stage_failures_are_dead_lettered_and_the_rest_produced() -> None:
    stage, producer = EchoStage(), FakeProducer()
    stage.reject["l2"] = IllegalTransitionError("new", "replied")
    bad_ev = event("l2", partition=2, offset=9, campaign_id="camp-x")
    run = runner(stage, producer)
    await run.process([event("l1"), bad_ev, event("l3")])

    assert [s.value for s in producer.to(OUT)] == [b"l1", b"l3"]
    [dl] = dead_letters(producer)
    assert dl["reason"] == "illegal_transition"
    assert dl["error_class"] == "IllegalTransitionError"
    assert dl["error_message"] == "illegal lead transition new -> replied"
    assert dl["lead_id"] == "l2"
    assert dl["campaign_id"] == "camp-x"
    assert (dl["original_partition"], dl["original_offset"]) == (2, 9)
    assert dl["payload"] == bad_ev.message.value
    assert (run.processed, run.dead_lettered) == (3, 1)


# --- TransientError: hold the batch, back off, retry ------------------------------------


@pytest.mark.usefixtures("no_jitter")
async def test_transient_error_holds_and_retries_the_whole_batch(sleeps: list[float]) -> None:
    stage, producer = EchoStage(), FakeProducer()
    stage.raise_next = [TransientError("pg down"), DatabaseUnavailableError("pg still down")]
    run = runner(stage, producer)
    await run.process([event("l1"), event("l2"), event("l3")])

    assert stage.calls == [["l1", "l2", "l3"]] * 3  # never split, never dropped
    assert sleeps == pytest.approx([0.2, 0.4])
    assert producer.to(DLQ) == []
    assert [s.value for s in producer.to(OUT)] == [b"l1", b"l2", b"l3"]  # produced once
    assert run.transient_retries == 2
    assert run.dead_lettered == 0


@pytest.mark.usefixtures("no_jitter")
async def test_transient_backoff_doubles_up_to_max_backoff(sleeps: list[float]) -> None:
    stage = EchoStage()
    stage.raise_next = [TransientError("down") for _ in range(6)]
    await runner(stage, FakeProducer(), max_backoff=0.5).process([event("l1")])
    assert sleeps == pytest.approx([0.2, 0.4, 0.5, 0.5, 0.5, 0.5])


async def test_transient_backoff_is_jittered_around_the_delay(
    sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = iter([0.0, 0.999])
    monkeypatch.setattr(random, "random", lambda: next(draws))
    stage = EchoStage()
    stage.raise_next = [TransientError("down"), TransientError("down")]
    await runner(stage, FakeProducer()).process([event("l1")])
    assert sleeps == pytest.approx([0.2 * 0.5, 0.4 * 1.499])


# --- any other exception: one item at a time, dead-letter only the poison ---------------


async def test_unexpected_error_isolates_the_poison_item(sleeps: list[float]) -> None:
    stage, producer = EchoStage(), FakeProducer()
    stage.poison["bad"] = ValueError("boom\nsecond line with details")
    poison = event("bad", partition=1, offset=11, headers=[(ATTEMPT_HEADER, b"2")])
    run = runner(stage, producer)
    await run.process([event("a"), poison, event("c")])

    assert stage.calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    assert [s.value for s in producer.to(OUT)] == [b"a", b"c"]
    [dl] = dead_letters(producer)
    assert dl["reason"] == "unexpected"
    assert dl["error_class"] == "ValueError"
    assert dl["error_message"] == "boom"  # first line only
    assert (dl["original_partition"], dl["original_offset"], dl["attempt"]) == (1, 11, 2)
    assert dl["payload"] == poison.message.value
    assert dl["lead_id"] == "bad"
    assert sleeps == []  # no backoff for a poison item
    assert (run.processed, run.dead_lettered, run.transient_retries) == (3, 1, 0)


async def test_poison_leadflow_error_keeps_its_reason() -> None:
    stage, producer = EchoStage(), FakeProducer()
    stage.poison["bad"] = ProviderError("provider said no")
    await runner(stage, producer).process([event("ok"), event("bad")])
    [dl] = dead_letters(producer)
    assert (dl["reason"], dl["error_class"]) == ("provider", "ProviderError")
    assert [s.value for s in producer.to(OUT)] == [b"ok"]


@pytest.mark.usefixtures("no_jitter")
async def test_transient_error_while_isolating_retries_that_item(sleeps: list[float]) -> None:
    stage, producer = EchoStage(), FakeProducer()
    # the batch fails, then item "a" alone hits a transient error once
    stage.raise_next = [RuntimeError("batch failed"), TransientError("pg blip")]
    run = runner(stage, producer)
    await run.process([event("a"), event("b")])

    assert stage.calls == [["a", "b"], ["a"], ["a"], ["b"]]
    assert sleeps == pytest.approx([0.2])
    assert producer.to(DLQ) == []
    assert [s.value for s in producer.to(OUT)] == [b"a", b"b"]
    assert run.transient_retries == 1


async def test_long_error_message_is_cut_and_empty_one_named() -> None:
    stage, producer = EchoStage(), FakeProducer()
    stage.poison["long"] = ValueError("x" * 2000)
    stage.poison["empty"] = KeyError()
    await runner(stage, producer).process([event("long"), event("empty")])
    by_lead = {dl["lead_id"]: dl for dl in dead_letters(producer)}
    assert by_lead["long"]["error_message"] == "x" * 500
    assert by_lead["empty"]["error_message"] == "KeyError"
    assert by_lead["empty"]["reason"] == "unexpected"


async def test_cancellation_is_not_swallowed() -> None:
    stage, producer = EchoStage(), FakeProducer()
    stage.raise_next = [asyncio.CancelledError()]
    with pytest.raises(asyncio.CancelledError):
        await runner(stage, producer).process([event("a")])
    assert stage.calls == [["a"]]  # not re-run one by one
    assert producer.sent == []


# --- producing: delivery awaited, failures retried ---------------------------------------


class FlakyProducer(FakeProducer):
    """Fails the first ``fail_futures`` deliveries, or raises in ``send`` ``fail_sends`` times."""

    def __init__(self, *, fail_futures: int = 0, fail_sends: int = 0) -> None:
        super().__init__()
        self.fail_futures = fail_futures
        self.fail_sends = fail_sends
        self.attempts = 0

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> asyncio.Future[None]:
        self.attempts += 1
        if self.fail_sends:
            self.fail_sends -= 1
            raise ConnectionError("broker unreachable")
        if self.fail_futures:
            self.fail_futures -= 1
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(TimeoutError("delivery timed out"))
            return future
        return await super().send(topic, key, value, partition, timestamp, headers)


@pytest.mark.parametrize(
    ("producer", "attempts", "retries"),
    [
        # a's delivery fails after the dead letter was sent: both go out again
        (FlakyProducer(fail_futures=1), 4, 1),
        # send() raises at once, twice: nothing went out until the third try
        (FlakyProducer(fail_sends=2), 4, 2),
    ],
    ids=["delivery-fails", "send-raises"],
)
async def test_producer_failures_are_retried_until_delivered(
    producer: FlakyProducer, attempts: int, retries: int, sleeps: list[float]
) -> None:
    stage = EchoStage()
    run = runner(stage, producer)
    await run.process([event("a"), event("b", value=b"junk")])
    assert stage.calls == [["a"]]  # the stage is not re-run for a producer failure
    assert [s.value for s in producer.to(OUT)] == [b"a"]
    # the whole batch is produced again (at-least-once: a record may go out twice)
    assert {DEAD.decode(s.value)["lead_id"] for s in producer.to(DLQ)} == {"b"}
    assert producer.attempts == attempts
    assert run.transient_retries == retries
    assert sleeps == pytest.approx([0.2, 0.4][:retries])
    assert run.dead_lettered == 1


# --- run(): acks only after the batch is durable, each event exactly once -----------------


class DeferredProducer:
    """Delivery futures complete 1 ms after ``send`` (not at once); logs to ``timeline``."""

    def __init__(self, timeline: list[tuple[str, Any]]) -> None:
        self.timeline = timeline
        self.futures: list[asyncio.Future[None]] = []
        self.delivered: list[bytes] = []

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.futures.append(future)
        self.timeline.append(("send", topic))

        def deliver() -> None:
            self.delivered.append(value)
            self.timeline.append(("delivered", topic))
            future.set_result(None)

        loop.call_later(0.001, deliver)
        return future


@dataclass
class Ack:
    offset: int
    undelivered: int  # futures not done when the ack happened


class FakeStream:
    """``noack_take`` yields the given batches; ``ack`` records what was durable then."""

    def __init__(
        self,
        batches: Sequence[Sequence[FakeEvent]],
        producer: DeferredProducer,
        timeline: list[tuple[str, Any]],
    ) -> None:
        self.batches = batches
        self.producer = producer
        self.timeline = timeline
        self.acks: list[Ack] = []
        self.take_args: list[tuple[int, float]] = []

    async def noack_take(self, max_: int, within: float) -> AsyncIterator[Sequence[FakeEvent]]:
        self.take_args.append((max_, within))
        for batch in self.batches:
            yield list(batch)

    async def ack(self, event: FakeEvent) -> bool:
        undelivered = sum(not f.done() for f in self.producer.futures)
        self.acks.append(Ack(event.message.offset, undelivered))
        self.timeline.append(("ack", event.message.offset))
        return True


async def test_run_acks_each_event_once_and_only_after_delivery() -> None:
    timeline: list[tuple[str, Any]] = []
    producer = DeferredProducer(timeline)
    stage = EchoStage()
    stage.on_call = lambda items: timeline.append(("handle", [i.offset for i in items]))
    stage.poison["p"] = ValueError("poison")
    batch1 = [event("a", partition=0), event("b", partition=1), event("x", value=b"junk")]
    batch2 = [event("c"), event("p"), event("d")]
    stream = FakeStream([batch1, batch2], producer, timeline)
    run = runner(stage, producer, batch_size=7, batch_within=0.25)

    await run.run(stream)

    assert stream.take_args == [(7, 0.25)]
    offsets = [ev.message.offset for ev in batch1 + batch2]
    assert Counter(a.offset for a in stream.acks) == Counter(offsets)  # each exactly once
    assert all(a.undelivered == 0 for a in stream.acks)
    # 2 + 1 dead letter in batch 1; 2 + 1 dead letter in batch 2
    assert len(producer.delivered) == 6
    # batch 1 is acked (after its deliveries) before batch 2 is handled
    kinds = [kind for kind, _ in timeline]
    first_ack = kinds.index("ack")
    second_handle = next(i for i, (k, v) in enumerate(timeline) if k == "handle" and i > first_ack)
    assert kinds[:first_ack].count("delivered") == 3
    assert kinds[first_ack : first_ack + 3] == ["ack"] * 3
    assert timeline[second_handle][1] == [ev.message.offset for ev in batch2]
    assert (run.processed, run.dead_lettered) == (6, 2)


async def test_run_does_not_ack_a_batch_whose_processing_was_cancelled() -> None:
    timeline: list[tuple[str, Any]] = []
    producer = DeferredProducer(timeline)
    stage = EchoStage()
    batch1, batch2 = [event("a"), event("b")], [event("c")]

    def cancel_second(items: Sequence[Item]) -> None:
        if items[0].lead_id == "c":
            raise asyncio.CancelledError

    stage.on_call = cancel_second
    stream = FakeStream([batch1, batch2], producer, timeline)
    with pytest.raises(asyncio.CancelledError):
        await runner(stage, producer).run(stream)
    assert [a.offset for a in stream.acks] == [ev.message.offset for ev in batch1]
    assert all(ev.message.acked for ev in batch2)  # set aside: not waited for, never committed


def stream_events_set_aside(stream: FakeStream) -> int:
    return sum(bool(ev.message.acked) for batch in stream.batches for ev in batch)


async def test_run_holds_acks_while_transient_errors_last(
    sleeps: list[float], no_jitter: None
) -> None:
    timeline: list[tuple[str, Any]] = []
    producer = DeferredProducer(timeline)
    stage = EchoStage()
    stage.raise_next = [TransientError("pg down")] * 3
    batch = [event("a"), event("b")]
    stream = FakeStream([batch], producer, timeline)

    def no_ack_yet(items: Sequence[Item]) -> None:
        assert stream.acks == []

    stage.on_call = no_ack_yet
    await runner(stage, producer).run(stream)
    assert len(stage.calls) == 4
    assert sleeps == pytest.approx([0.2, 0.4, 0.8])
    assert sorted(a.offset for a in stream.acks) == sorted(ev.message.offset for ev in batch)
    assert all(a.undelivered == 0 for a in stream.acks)


# --- error_reason and hold_until_done ---------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TransientError("x"), "transient"),
        (DatabaseUnavailableError("x"), "database_unavailable"),
        (IllegalTransitionError(None, "new"), "illegal_transition"),
        (NotSingleObjectError("x"), "not_avro"),
        (CodecError("x"), "codec"),
        (LeadflowError("x"), "error"),
        (ValueError("x"), "unexpected"),
        (asyncio.CancelledError(), "unexpected"),
    ],
)
def test_error_reason(exc: BaseException, reason: str) -> None:
    assert error_reason(exc) == reason


def _action(
    outcomes: Iterator[BaseException | None], calls: list[int]
) -> Callable[[], Awaitable[None]]:
    async def action() -> None:
        calls.append(1)
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    return action


@pytest.mark.usefixtures("no_jitter")
async def test_hold_until_done_retries_transient_errors(sleeps: list[float]) -> None:
    calls: list[int] = []
    outcomes = iter([TransientError("a"), DatabaseUnavailableError("b"), TransientError("c"), None])
    await hold_until_done(_action(outcomes, calls), "mirror", max_backoff=0.5)
    assert len(calls) == 4
    assert sleeps == pytest.approx([0.2, 0.4, 0.5])


@pytest.mark.usefixtures("no_jitter")
async def test_hold_until_done_caps_its_pause_at_the_configured_backoff(
    sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        settings, "_cached", settings.Settings.from_env({"LEADFLOW_RETRY_BACKOFF_MAX_S": "0.3"})
    )
    calls: list[int] = []
    outcomes = iter([TransientError("a"), TransientError("b"), TransientError("c"), None])
    await hold_until_done(_action(outcomes, calls), "mirror")
    assert sleeps == pytest.approx([0.2, 0.3, 0.3])


async def test_hold_until_done_spreads_each_pause_over_half_to_one_and_a_half_times(
    sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    draws = iter([0.0, 0.999])
    monkeypatch.setattr(random, "random", lambda: next(draws))
    calls: list[int] = []
    outcomes = iter([TransientError("a"), TransientError("b"), None])
    await hold_until_done(_action(outcomes, calls), "mirror", max_backoff=5)
    assert sleeps == pytest.approx([0.1, 0.4 * 1.499])


async def test_hold_until_done_runs_once_when_it_succeeds(sleeps: list[float]) -> None:
    calls: list[int] = []
    await hold_until_done(_action(iter([None]), calls), "mirror")
    assert calls == [1]
    assert sleeps == []


async def test_hold_until_done_lets_other_errors_through(sleeps: list[float]) -> None:
    calls: list[int] = []
    with pytest.raises(IllegalTransitionError):
        await hold_until_done(_action(iter([IllegalTransitionError("new", "x")]), calls), "m")
    assert calls == [1]
    assert sleeps == []


# --- stopping mid-batch: finish the batch in flight (up to drain_timeout), never ack it ----


class BlockingStage(EchoStage):
    """The first call waits for ``release``; records whether it was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def handle(self, items: Sequence[Item]) -> BatchResult:
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return await super().handle(items)


async def test_stop_mid_batch_finishes_the_batch_and_acks_it() -> None:
    timeline: list[tuple[str, Any]] = []
    producer = DeferredProducer(timeline)
    stage = BlockingStage()
    batch = [event("a"), event("b")]
    stream = FakeStream([batch, [event("c")]], producer, timeline)
    task = asyncio.create_task(runner(stage, producer, drain_timeout=5.0).run(stream))
    await stage.entered.wait()
    task.cancel()
    asyncio.get_running_loop().call_later(0.01, stage.release.set)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not stage.cancelled
    assert producer.delivered == [b"a", b"b"]  # the batch's effects are durable
    assert [a.offset for a in stream.acks] == [ev.message.offset for ev in batch]  # and acked
    assert all(a.undelivered == 0 for a in stream.acks)  # only once durable
    assert stage.calls == [["a", "b"]]  # and the next batch is not started


async def test_stop_gives_up_on_the_batch_after_drain_timeout() -> None:
    timeline: list[tuple[str, Any]] = []
    producer = DeferredProducer(timeline)
    stage = BlockingStage()  # never released
    stream = FakeStream([[event("a")]], producer, timeline)
    task = asyncio.create_task(runner(stage, producer, drain_timeout=0.02).run(stream))
    await stage.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2.0)
    assert stage.cancelled
    assert producer.futures == []
    assert stream.acks == []  # set aside: never committed, delivered again
    assert stream_events_set_aside(stream) == 1


class FaustLikeStream:
    """Like Faust's noack_take: acks off while taking, restored in the generator's finally."""

    def __init__(self, batches: list[list[FakeEvent]]) -> None:
        self.batches = batches
        self.enable_acks = True
        self.acked: list[FakeEvent] = []

    async def noack_take(self, max_: int, within: float) -> AsyncIterator[list[FakeEvent]]:
        restore = self.enable_acks
        self.enable_acks = False
        try:
            for batch in self.batches:
                yield batch
            await asyncio.Event().wait()  # a live stream never ends by itself
        finally:
            self.enable_acks = restore

    async def ack(self, ev: FakeEvent) -> bool:
        self.acked.append(ev)
        return True


async def test_a_stopping_stage_leaves_acks_off_and_acks_only_the_batch_it_finished() -> None:
    """Faust acks (and commits) whatever flows while acks are on: after a stop they must
    stay off, or events the stage never handled would be committed during shutdown."""
    first, second = [event("a")], [event("b")]
    release = asyncio.Event()

    class SlowStage(EchoStage):
        async def handle(self, items: Sequence[Item]) -> BatchResult:
            if items[0].lead_id == "b":
                await release.wait()
            return await super().handle(items)

    stream = FaustLikeStream([first, second])
    task = asyncio.ensure_future(runner(SlowStage(), FakeProducer()).run(stream))
    await asyncio.sleep(0.05)  # batch one done and acked; batch two in flight
    task.cancel()
    await asyncio.sleep(0)
    release.set()  # the drain lets batch two finish
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.acked == first + second  # batch two was finished during the drain
    assert stream.enable_acks is False


# --- metrics: what each batch reports (streams/metrics.py) ---------------------------------


def metric(name: str, **labels: str) -> float:
    """A sample of leadflow's registry, 0 when absent."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_batch_reports_outcomes_dead_letters_and_latencies() -> None:
    class Measured(EchoStage):
        name = "measured-batch"  # a name of its own: its metrics start at zero

    stage, producer = Measured(), FakeProducer()
    stage.reject = {"l2": IllegalTransitionError("completed", "new")}
    stamped = event("l1")
    stamped.message.timestamp = time.time() - 2.0  # type: ignore[attr-defined]
    run = runner(stage, producer)
    await run.process([stamped, event("l2"), event("l3", value=b"junk")])

    labels = {"stage": "measured-batch"}
    assert metric("leadflow_stage_records_total", **labels, outcome="ok") == 1
    assert metric("leadflow_stage_records_total", **labels, outcome="dead_letter") == 2
    assert metric("leadflow_dead_letters_total", **labels, reason="illegal_transition") == 1
    assert metric("leadflow_dead_letters_total", **labels, reason="not_avro") == 1
    assert metric("leadflow_stage_errors_total", **labels, error="not_avro") == 1
    assert metric("leadflow_stage_processing_seconds_count", **labels) == 1
    assert metric("leadflow_stage_batch_records_sum", **labels) == 3
    # only the stamped record has a Kafka timestamp (the fakes carry none)
    assert metric("leadflow_stage_event_latency_seconds_count", **labels) == 1
    assert 2.0 <= metric("leadflow_stage_event_latency_seconds_sum", **labels) < 10.0
    # measuring changed nothing the runner does
    assert (run.processed, run.dead_lettered) == (3, 2)
    assert [s.value for s in producer.to(OUT)] == [b"l1"]


async def test_retries_count_errors_by_reason(sleeps: list[float]) -> None:
    class Measured(EchoStage):
        name = "measured-retries"

    stage = Measured()
    stage.raise_next = [DatabaseUnavailableError("down"), ValueError("poison")]
    producer = FlakyProducer(fail_sends=1)
    run = runner(stage, producer)
    await run.process([event("a")])
    labels = {"stage": "measured-retries"}
    assert metric("leadflow_stage_errors_total", **labels, error="database_unavailable") == 1
    assert metric("leadflow_stage_errors_total", **labels, error="unexpected") == 1
    assert metric("leadflow_stage_errors_total", **labels, error="produce_failed") == 1
    assert metric("leadflow_stage_records_total", **labels, outcome="ok") == 1
    assert run.transient_retries == 2
    assert [s.value for s in producer.to(OUT)] == [b"a"]
