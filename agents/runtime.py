"""How every stage runs: batches, dead letters, durable outputs, then acks.

A stage reads its input topic as raw bytes in batches
(:func:`~streams.batched_take.take_batches`, Faust's ``noack_take`` without
its idle wake-ups), so nothing is acked behind its back. For each batch:

1. each event is decoded; one that does not decode becomes a dead letter;
2. the stage handles the decoded items and returns outputs and per-item
   failures (a failure becomes a dead letter with its reason and origin);
3. a :class:`~streams.errors.TransientError` (Postgres down) holds the whole
   batch: back off (doubling from 0.2 s up to ``LEADFLOW_RETRY_BACKOFF_MAX_S``)
   and retry, never dead-letter for it. Any other exception
   escaping the stage re-runs the batch one item at a time, so only the
   poison item is dead-lettered;
4. outputs and dead letters are produced and their delivery awaited;
5. only then are the batch's events acked.

Faust flushes its producer before it commits offsets, so table changelog
writes made while handling are durable before the offset moves on. Offsets
therefore never pass an event whose effects are not durable, and one poison
message costs one dead letter, never a stalled partition or a dead worker.

Every batch is measured in :mod:`streams.metrics` (``StageMetrics``): records
by outcome, dead letters by reason, errors by reason, batch size, the time
from taking the batch to durable outputs, and each record's latency from its
Kafka timestamp. Measuring changes nothing about how a batch is handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from agents.faults import raise_point
from streams.batched_take import TakeBatches, take_batches
from streams.codec import AvroCodec
from streams.errors import CodecError, LeadflowError, RecordTooLargeError, TransientError
from streams.faust_fixes import ack_processed, set_aside
from streams.metrics import StageMetrics
from streams.settings import get_settings

if TYPE_CHECKING:
    from agents.context import PipelineContext

__all__ = [
    "ATTEMPT_HEADER",
    "BatchResult",
    "Item",
    "Output",
    "Stage",
    "StageRunner",
    "decode_history",
    "encode_history",
    "error_reason",
    "hold_until_done",
]

log = logging.getLogger(__name__)

#: Header carrying how many times a record has been tried (kept by redrive).
ATTEMPT_HEADER = "x-leadflow-attempt"
#: Header carrying a redriven record's earlier failures: a JSON list of
#: DeadLetterAttempt objects (see schemas/dead_letter.v1.avsc), oldest first.
HISTORY_HEADER = "x-leadflow-history"
_MAX_MESSAGE = 500
_T = TypeVar("_T")

#: First pause of every retry loop here; each next pause doubles up to a cap.
_FIRST_PAUSE_S = 0.2


class _Backoff:
    """Doubling pauses from 0.2 s up to ``cap`` seconds (one retry loop's state).

    With ``jitter`` each pause is spread over half to one and a half times its
    base, so workers that failed together do not all retry at the same moment.
    """

    def __init__(self, cap: float, *, jitter: bool = True) -> None:
        self.cap = cap
        self.jitter = jitter
        #: The base of the next pause (what the logs announce).
        self.delay = _FIRST_PAUSE_S

    async def pause(self) -> None:
        """Sleep the next pause, then double it (up to the cap)."""
        await asyncio.sleep(self.delay * (0.5 + random.random()) if self.jitter else self.delay)
        self.delay = min(self.delay * 2, self.cap)


#: Per input topic, per partition: the newest record timestamp (unix s) a stage
#: of this worker has finished (the sweepers in agents/schedule.py read it).
_handled_up_to: dict[str, dict[int, float]] = {}


def handled_up_to(topic: str) -> dict[int, float]:
    """Partition -> newest record timestamp finished on ``topic`` by this worker."""
    return _handled_up_to.setdefault(topic, {})


@dataclass(frozen=True)
class Output:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class Item:
    """One input event, decoded."""

    event: Any
    topic: str
    partition: int
    offset: int
    key: bytes | None
    payload: bytes
    attempt: int
    record: dict[str, Any] = field(default_factory=dict)
    #: Earlier failures of a redriven record (from HISTORY_HEADER), oldest first.
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lead_id(self) -> str:
        """The lead this event is about."""
        return str(self.record.get("lead_id") or (self.key or b"").decode("utf-8", "replace"))

    @property
    def campaign_id(self) -> str | None:
        """The campaign, when the record names one."""
        value = self.record.get("campaign_id")
        return None if value is None else str(value)


@dataclass
class BatchResult:
    """What a stage made of a batch."""

    outputs: list[Output] = field(default_factory=list)
    failures: list[tuple[Item, BaseException]] = field(default_factory=list)

    def extend(self, other: BatchResult) -> None:
        """Add another result's outputs and failures."""
        self.outputs.extend(other.outputs)
        self.failures.extend(other.failures)


class Stage(ABC):
    """One pipeline stage. Subclasses say what they read and how they handle a batch."""

    #: Stage name, used in dead letters, logs and metric labels.
    name: ClassVar[str]
    #: Full Avro name of the input records.
    input_schema: ClassVar[str]

    @abstractmethod
    async def handle(self, items: Sequence[Item]) -> BatchResult:
        """Handle decoded items; put each item's own failure in ``failures``."""

    async def on_dead_letter(self, failures: Sequence[tuple[Item, BaseException]]) -> None:
        """Called with the items the stage failed, before they are dead-lettered.

        Stages that own lead state end those leads here
        (:class:`agents.quarantine.QuarantinesDeadLetters`); the default does nothing.
        """
        return None


def error_reason(exc: BaseException) -> str:
    """A short, label-safe reason for ``exc``."""
    if isinstance(exc, LeadflowError):
        return exc.reason
    return "unexpected"


def _safe_message(exc: BaseException) -> str:
    """One line about ``exc``. Our own errors never carry contact data; others are cut short."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line[:_MAX_MESSAGE]


class StageRunner:
    """Runs a :class:`Stage` over a Faust stream (see the module docstring)."""

    def __init__(
        self,
        stage: Stage,
        *,
        producer: Any,
        input_topic: str,
        dead_letter_topic: str,
        batch_size: int = 500,
        batch_within: float = 0.05,
        max_backoff: float | None = None,
        drain_timeout: float = 20.0,
        max_record_bytes: int = 100_000,
        take: TakeBatches = take_batches,
    ) -> None:
        self.stage = stage
        #: How batches are taken from the stream (tests pass a stand-in).
        self.take = take
        self.producer = producer
        self.input_topic = input_topic
        self.dead_letter_topic = dead_letter_topic
        self.batch_size = batch_size
        self.batch_within = batch_within
        #: Longest retry pause (default ``LEADFLOW_RETRY_BACKOFF_MAX_S``).
        self.max_backoff = (
            get_settings().retry_backoff_max_s if max_backoff is None else max_backoff
        )
        self.drain_timeout = drain_timeout
        self.max_record_bytes = max_record_bytes
        self.codec = AvroCodec(stage.input_schema, subject=input_topic)
        self.dead_codec = AvroCodec("leadflow.DeadLetter", subject=dead_letter_topic)
        #: Counters of this runner (the Prometheus families are in ``metrics``).
        self.processed = 0
        self.dead_lettered = 0
        self.transient_retries = 0
        self.metrics = StageMetrics(stage.name)

    async def run(self, stream: Any) -> None:
        """Consume ``stream`` forever (the body of the Faust agent).

        When the worker stops (the agent is cancelled) mid-batch, the batch in
        flight is finished first, up to ``drain_timeout`` seconds, so a stop
        never leaves a send claimed but its outcome unrecorded. A finished
        batch is acked (:func:`streams.faust_fixes.ack_processed` counts even
        while Faust stops or rebalances); one that did not finish is set
        aside, never committed, and delivered again to the next owner.
        """
        batches = self.take(stream, self.batch_size, self.batch_within)
        try:
            async for events in batches:
                batch = asyncio.ensure_future(self.process(events))
                try:
                    await asyncio.shield(batch)
                except asyncio.CancelledError:
                    log.info(
                        "stage %s: stopping; finishing %d events in flight",
                        self.stage.name,
                        len(events),
                    )
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await asyncio.wait_for(batch, self.drain_timeout)
                    await self._settle(stream, events, done=batch.done() and not batch.cancelled()
                                       and batch.exception() is None)  # fmt: skip
                    raise
                await self._settle(stream, events, done=True)
        finally:
            # take_batches turns acks back on when its generator is finalised, and
            # Faust would then ack (and commit) events this stage never handled
            # while the worker shuts down. Close it now and keep acks off.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await batches.aclose()
            stream.enable_acks = False

    @staticmethod
    async def _settle(stream: Any, events: Sequence[Any], *, done: bool) -> None:
        """Ack a finished batch; set an unfinished one aside (redelivered, never committed)."""
        for event in events:
            if done:
                await ack_processed(stream, event)
            else:
                set_aside(event.app, event.message)

    async def process(self, events: Sequence[Any]) -> None:
        """Handle one batch until its effects and outputs are durable."""
        taken_at = time.monotonic()
        items: list[Item] = []
        dead: list[Output] = []
        reasons: list[str] = []
        for event in events:
            item = self._item(event)
            try:
                if len(item.payload) > self.max_record_bytes:
                    raise RecordTooLargeError(
                        f"{len(item.payload)} bytes, the limit is {self.max_record_bytes} "
                        "(LEADFLOW_MAX_RECORD_BYTES); only the first bytes are kept",
                        subject=item.topic,
                    )
                item.record = self.codec.decode(item.payload)
            except CodecError as exc:
                dead.append(self.dead_letter(item, exc))
                reasons.append(error_reason(exc))
                continue
            items.append(item)
        result = await self._handle_with_retry(items) if items else BatchResult()
        if result.failures:
            await self.stage.on_dead_letter(result.failures)
        outputs = list(result.outputs)
        outputs += [self.dead_letter(item, exc) for item, exc in result.failures]
        outputs += dead
        await self._produce_with_retry(outputs)
        progress = handled_up_to(self.input_topic)
        for event in events:
            stamp = record_timestamp(event)
            partition = event.message.partition
            if stamp is not None and stamp > progress.get(partition, 0.0):
                progress[partition] = stamp
        self.processed += len(events)
        self.dead_lettered += len(dead) + len(result.failures)
        self.metrics.batch_done(
            records=len(events),
            dead_letter_reasons=[error_reason(exc) for _, exc in result.failures] + reasons,
            taken_at=taken_at,
            event_timestamps=[record_timestamp(event) for event in events],
        )

    async def _handle(self, items: Sequence[Item]) -> BatchResult:
        raise_point(self.stage.name, [item.lead_id for item in items])
        return await self.stage.handle(items)

    async def _handle_with_retry(self, items: Sequence[Item]) -> BatchResult:
        backoff = _Backoff(self.max_backoff)
        while True:
            try:
                return await self._handle(items)
            except TransientError as exc:
                self.transient_retries += 1
                self.metrics.error(error_reason(exc))
                log.warning(
                    "stage %s: %s; holding %d events, retrying in %.1f s",
                    self.stage.name,
                    _safe_message(exc),
                    len(items),
                    backoff.delay,
                )
                await backoff.pause()
            except Exception as exc:  # isolate the poison item
                self.metrics.error(error_reason(exc))
                log.warning(
                    "stage %s: batch of %d failed (%s); retrying one by one",
                    self.stage.name,
                    len(items),
                    type(exc).__name__,
                )
                return await self._one_by_one(items)

    async def _one_by_one(self, items: Iterable[Item]) -> BatchResult:
        result = BatchResult()
        for item in items:
            backoff = _Backoff(self.max_backoff, jitter=False)
            while True:
                try:
                    result.extend(await self._handle([item]))
                    break
                except TransientError as exc:
                    self.transient_retries += 1
                    self.metrics.error(error_reason(exc))
                    await backoff.pause()
                except Exception as exc:
                    result.failures.append((item, exc))
                    break
        return result

    async def _produce_with_retry(self, outputs: Sequence[Output]) -> None:
        backoff = _Backoff(self.max_backoff, jitter=False)
        while True:
            try:
                await self._produce(outputs)
                return
            except Exception as exc:  # broker hiccup: keep the batch, try again
                self.transient_retries += 1
                self.metrics.error("produce_failed")
                log.warning(
                    "stage %s: producing %d records failed (%s); retrying in %.1f s",
                    self.stage.name,
                    len(outputs),
                    type(exc).__name__,
                    backoff.delay,
                )
                await backoff.pause()

    async def _produce(self, outputs: Sequence[Output]) -> None:
        futures = [
            await self.producer.send(
                o.topic, o.key, o.value, o.partition, None, list(o.headers) or None
            )
            for o in outputs
        ]
        if futures:
            await asyncio.gather(*futures)

    def dead_letter(self, item: Item, exc: BaseException) -> Output:
        """The dead-letter record for ``item`` failing with ``exc``."""
        now = datetime.now(UTC)
        record = {
            "original_topic": item.topic,
            "original_partition": item.partition,
            "original_offset": item.offset,
            "original_key": item.key,
            "stage": self.stage.name,
            "reason": error_reason(exc),
            "error_class": type(exc).__name__,
            "error_message": _safe_message(exc),
            "attempt": item.attempt,
            "payload": item.payload[: self.max_record_bytes],
            "campaign_id": item.campaign_id,
            "lead_id": item.lead_id or None,
            "failed_at": now,
            "history": item.history,
        }
        log.info(
            "stage %s: dead-lettered %s[%d]@%d: %s (%s)",
            self.stage.name,
            item.topic,
            item.partition,
            item.offset,
            record["reason"],
            record["error_class"],
        )
        return Output(self.dead_letter_topic, item.key, self.dead_codec.encode(record))

    @staticmethod
    def _item(event: Any) -> Item:
        message = event.message
        attempt = 1
        history: list[dict[str, Any]] = []
        for name, value in message.headers or ():
            if name == ATTEMPT_HEADER:
                try:
                    attempt = int(value)
                except (TypeError, ValueError):
                    attempt = 1
            elif name == HISTORY_HEADER:
                history = decode_history(value)
        payload = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
        return Item(
            event=event,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            payload=payload,
            attempt=attempt,
            history=history,
        )


def runner_for(stage: Stage, ctx: PipelineContext, topic: str) -> StageRunner:
    """The :class:`StageRunner` of ``stage`` over the topic ``topic`` (a base
    name such as ``"raw"``), with the batch and size limits from the settings."""
    return StageRunner(
        stage,
        producer=ctx.producer,
        input_topic=ctx.topic(topic),
        dead_letter_topic=ctx.topic("dead-letter"),
        batch_size=ctx.settings.stage_batch_size,
        batch_within=ctx.settings.stage_batch_within_ms / 1000,
        max_record_bytes=ctx.settings.max_record_bytes,
        max_backoff=ctx.settings.retry_backoff_max_s,
    )


def record_timestamp(event: Any) -> float | None:
    """The Kafka timestamp of ``event`` in unix seconds, None when it has none."""
    value = getattr(event.message, "timestamp", None)
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def decode_history(raw: bytes | None) -> list[dict[str, Any]]:
    """Parse a HISTORY_HEADER value; anything malformed counts as no history."""
    try:
        entries = json.loads(raw or b"[]")
    except (ValueError, TypeError):
        return []
    if not isinstance(entries, list):
        return []
    history = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        try:
            history.append(
                {
                    "stage": str(entry["stage"]),
                    "reason": str(entry["reason"]),
                    "error_class": str(entry["error_class"]),
                    "error_message": str(entry["error_message"])[:_MAX_MESSAGE],
                    "failed_at": datetime.fromtimestamp(int(entry["failed_at"]) / 1000, UTC),
                }
            )
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            continue
    return history


def encode_history(history: Sequence[Mapping[str, Any]]) -> bytes:
    """A HISTORY_HEADER value for ``history`` (failed_at as datetime or epoch ms)."""

    def ms(value: Any) -> int:
        return int(value.timestamp() * 1000) if isinstance(value, datetime) else int(value)

    return json.dumps(
        [
            {
                "stage": h["stage"],
                "reason": h["reason"],
                "error_class": h["error_class"],
                "error_message": h["error_message"],
                "failed_at": ms(h["failed_at"]),
            }
            for h in history
        ]
    ).encode()


async def hold_until_done(
    action: Callable[[], Awaitable[_T]], what: str, *, max_backoff: float | None = None
) -> _T:
    """Run ``action`` until it stops raising :class:`TransientError` (backing off); its result.

    For writes that must happen after the state table moved on (the Postgres
    mirror): retrying the write alone keeps the batch's transitions intact.
    The pause doubles up to ``max_backoff`` (default ``LEADFLOW_RETRY_BACKOFF_MAX_S``).
    """
    backoff = _Backoff(get_settings().retry_backoff_max_s if max_backoff is None else max_backoff)
    while True:
        try:
            return await action()
        except TransientError as exc:
            log.warning("%s: %s; retrying in %.1f s", what, _safe_message(exc), backoff.delay)
            await backoff.pause()


def monotonic_ms() -> int:
    """Monotonic milliseconds (for latency measurements)."""
    return int(time.monotonic() * 1000)
