"""Fixes for faust-streaming 0.15, installed when the worker's app is built.

1. **Skipped events are acked** (loses events at shutdown and on rebalance).

faust-streaming 0.15's ``Stream._py_aiter`` skips an event it takes off a
channel while flow control is suspended (the worker is stopping, or a
rebalance is under way) or whose message belongs to an older consumer
generation, and then **acks** it "so the lag does not grow". Nothing
processed that event, yet its offset becomes committable: a touch released a
few milliseconds before a SIGTERM, or fetched just before a rebalance, is
committed and never handled. (Seen in leadflow's restart test: leads left in
``in_sequence`` whose ``touch-due`` record no stage ever saw, with the
group's offset past it.)

:func:`install` wraps ``faust.events.Event.ack`` so such an ack does not
mark the offset committable. The message is *set aside* instead: taken out
of the consumer's unacked set (or Faust's ``wait_empty``, which a rebalance
and a stop both run, would wait for it for ever, and the member would be
evicted from the group), its offset left out of the committable ones, and
its partition remembered. Once the rebalance is over (or at once, for an
older-generation message seen after it) each such partition that is still
ours is sought back to the lowest offset set aside, so Kafka delivers the
event again; after a stop the next start does. Events a stage *did* finish
are acked through :func:`ack_processed`, which always counts, so a
rebalance never waits for work that is done.

Faust's commit would still step over a message set aside at the head of a
partition: its ``Consumer._new_offset`` allows one missing offset right
after the committed one, and any number on a partition never committed
before (a fresh topic, so every start-up). The wrapped ``_new_offset``
therefore never commits at or past an offset set aside and not yet handled
since, nor while the offset right after the last commit is unhandled; the
partition's commits resume once it is delivered again and acked.

Two more ways Faust commits records no stage handled, both around
rebalances (seen as a third of a 10,000-lead campaign left ``enriched``
with lag 0, no fault injected): its fetch loop **drops a record below the
partition's read offset**, which a record of the previous assignment can
push past the position sought after the rebalance; and it **counts offsets
the fetch skipped as handled** (gap filling, meant for compacted and
transactional topics). The wrapped ``getmany`` puts the read offset back so
such a record is delivered (stages are idempotent), and the wrapped
``_add_gap`` only logs, so a skip stops commits instead of passing them.

Last, Faust's in-memory table store **replays the changelog into the live
table** after a rebalance, for the partitions the worker keeps: a record
older than what a stage wrote meanwhile (its own record not in the topic
yet) put the lead's state a step back. The wrapped ``apply_changelog_batch``
skips a record whose ``version`` is below the live value's.

And **a seek could crash the worker**: Faust's ``seek`` moves aiokafka's
fetcher from the app's thread while the consumer thread iterates the same
fetched-records dict; a deletion in between raised ``KeyError`` in
``fetched_records``, the Fetcher service crashed and the worker stopped
(``make chaos`` "slow": two crashes in four minutes, with the watchdog and
the head checks seeking often). The wrapped ``_seek`` runs the seek in the
consumer thread.

A partition paused for a full stream buffer was resumed early by every
rebalance, and then never paused again: see :mod:`streams.buffer_pauses`.

2. **DEBUG logging at ``-l warn``.** Faust's worker adds its terminal spinner's
log handler whenever the level is WARN or above and sets the root logger to
DEBUG for it, even when stdout is a file. Every aiokafka and Faust debug call
then builds a log record: 6 % of a busy worker's CPU in a py-spy profile
(docs/BENCHMARKS.md). :func:`install` keeps the spinner for terminals only.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping
from typing import Any

from faust.events import Event
from faust.stores.memory import Store as MemoryStore
from faust.transport.consumer import Consumer, ThreadDelegateConsumer
from faust.worker import Worker

from streams import buffer_pauses
from streams.lag import group_lag

__all__ = [
    "ack_processed",
    "install",
    "installed",
    "learn_start_offsets",
    "redeliver_set_aside",
    "set_aside",
]

log = logging.getLogger(__name__)

_original_ack = Event.ack
_original_new_offset = Consumer._new_offset
_original_getmany = Consumer.getmany
_original_add_gap = Consumer._add_gap
_original_apply_changelog = MemoryStore.apply_changelog_batch
_original_spinner_handler = Worker._setup_spinner_handler


#: True while a stage acks events it finished (:func:`ack_processed`).
_processed: contextvars.ContextVar[bool] = contextvars.ContextVar("processed", default=False)
#: Per partition, the lowest offset set aside unprocessed and not yet redelivered.
_set_aside: dict[Any, int] = {}
_redeliveries: set[asyncio.Future[Any]] = set()
#: Per partition, every offset set aside and not handled since: never committed over.
_held: dict[Any, set[int]] = {}


def _in_background(work: Coroutine[Any, Any, Any]) -> None:
    """Run ``work`` as a task of the running loop, kept referenced until it ends."""
    task = asyncio.get_running_loop().create_task(work)
    _redeliveries.add(task)
    task.add_done_callback(_redeliveries.discard)


def _guarded_ack(self: Any) -> bool:
    if _processed.get():
        held = _held.get(self.message.tp)
        if held:
            held.discard(self.message.offset)
        return bool(_original_ack(self))
    app = self.app
    suspended = not app.flow_control.is_active()
    if suspended or getattr(self.message, "generation_id", None) != app.consumer_generation_id:
        set_aside(app, self.message)
        if not suspended:  # an old message after the rebalance: redeliver it now
            _in_background(redeliver_set_aside(app))
        return False
    return bool(_original_ack(self))


def set_aside(app: Any, message: Any) -> None:
    """Let go of ``message`` unprocessed: never committed, delivered again later."""
    consumer = app.consumer
    message.acked = True  # Faust's wait_empty drops it from its unacked set
    unacked = getattr(consumer, "_unacked_messages", None)
    if unacked is not None:
        unacked.discard(message)
    tp = message.tp
    _held.setdefault(tp, set()).add(message.offset)
    lowest = _set_aside.get(tp)
    if lowest is None or message.offset < lowest:
        _set_aside[tp] = message.offset


async def redeliver_set_aside(app: Any) -> int:
    """Seek each assigned partition with messages set aside back to the lowest one.

    Returns how many partitions were sought. Partitions no longer assigned
    are forgotten: their new owner starts from the committed offset, which
    is before the messages set aside.
    """
    consumer = app.consumer
    assigned = consumer.assignment()
    sought = 0
    for tp, offset in list(_set_aside.items()):
        del _set_aside[tp]
        if tp in assigned:
            log.info(
                "redelivering %s[%d] from offset %d (set aside unprocessed)",
                tp.topic,
                tp.partition,
                offset,
            )
            await consumer.seek(tp, offset)
            sought += 1
    return sought


def _new_offset_below_held(self: Any, tp: Any) -> int | None:
    """Faust's next commit offset for ``tp``, never past an offset not handled.

    Guards around Faust's own computation: no commit while the first offset
    this worker must handle on the partition (the committed one; on a
    partition never committed, the group's position when it was assigned,
    see :func:`learn_start_offsets`) has not been acked (Faust lets one such
    offset through, and any number on a partition never committed), and none
    at or past an offset set aside. A partition whose head was skipped is
    sought back to it, so the skipped records are delivered.
    """
    acked = self._acked[tp]
    if acked:
        committed = self._committed_offset.get(tp)
        start = committed if committed is not None else _start.get(tp)
        if start is None:
            return None  # where this partition starts is not known yet: commit later
        if min(acked) > start:
            _seek_back(self, tp, start, min(acked))
            return None
    offset = _below_held(self, tp, acked)
    if offset is not None:
        _start[tp] = offset  # handled up to here: where handling resumes after a revoke
    return offset


def _below_held(consumer: Any, tp: Any, acked: list[int]) -> int | None:
    """Faust's commit offset for ``tp``, kept below any offset set aside."""
    held = _held.get(tp)
    if not held:
        return _original_new_offset(consumer, tp)
    lowest = min(held)
    above = [offset for offset in acked if offset >= lowest]
    acked[:] = [offset for offset in acked if offset < lowest]
    try:
        offset = _original_new_offset(consumer, tp)
    finally:
        acked.extend(above)
        acked.sort()
    if offset is not None and offset > lowest:
        return lowest  # a gap Faust filled ran past the held offset: stop right before it
    return offset


#: Per partition, the offset this worker's handling must start from: learned
#: after each assignment (:func:`learn_start_offsets`), then moved on by each
#: commit; used where Faust has no committed offset of its own.
_start: dict[Any, int] = {}
#: Per partition, when it was last sought back to its unhandled head.
_sought_back: dict[Any, float] = {}
_SEEK_BACK_EVERY_S = 10.0


def _seek_back(consumer: Any, tp: Any, start: int, first_acked: int) -> None:
    """Seek ``tp`` back to ``start`` (at most every few seconds): its head was skipped."""
    now = time.monotonic()
    if now - _sought_back.get(tp, float("-inf")) < _SEEK_BACK_EVERY_S:
        return
    if tp not in consumer.assignment():
        return  # revoked meanwhile: its next owner starts from the committed offset
    _sought_back[tp] = now
    log.warning(
        "%s[%d]: offsets %d-%d were never handled (first acked %d); seeking back to %d",
        tp.topic,
        tp.partition,
        start,
        first_acked - 1,
        first_acked,
        start,
    )
    _in_background(consumer.seek(tp, start))


async def _seek_in_consumer_thread(self: Any, partition: Any, offset: int) -> None:
    """Faust's ``_seek``, run in the consumer thread instead of the app's (see above)."""
    thread = self._thread

    async def seek() -> None:
        thread.seek(partition, offset)

    await thread.call_thread(seek)


async def learn_start_offsets(app: Any, assigned: Any) -> int:
    """Record where handling must start on each assigned partition; return how many.

    That is the group's committed offset, or the log start on a partition
    the group never committed. Faust learns committed offsets itself, but
    on a partition never committed it has nothing to check its first commit
    against, and after a rebalance its consumer has been seen starting such
    a partition at its end, skipping every record already there.
    """
    topics = sorted({tp.topic for tp in assigned if app.topics.acks_enabled_for(tp.topic)})
    if not topics:
        return 0
    bootstrap = ",".join(f"{url.host}:{url.port}" for url in app.conf.broker)
    # The lag module's clients, not Faust's consumer: a broker call through
    # its thread would hold up fetches and commits.
    rows = await asyncio.to_thread(group_lag, bootstrap, app.conf.id, topics)
    wanted = {(tp.topic, tp.partition): tp for tp in assigned}
    learned = 0
    for row in rows:
        tp = wanted.get((row.topic, row.partition))
        if tp is not None:
            start = row.start if row.committed is None else max(row.committed, row.start)
            _start[tp] = max(start, _start.get(tp, start))  # a commit since may be later
            learned += 1
    return learned


async def _getmany_delivering_rereads(self: Any, timeout: float) -> AsyncIterator[Any]:
    """Faust's ``getmany``, except that a record it would drop as read already is delivered.

    Faust's fetch loop drops a record whose offset is below the partition's
    *read offset* (the last one it passed on). That offset can run ahead of
    what was handled: a record of the previous assignment, taken off a fetch
    made before a rebalance, sets it after the seek to the committed offset.
    Every record from there up to it is then dropped, never handled, and
    committed over once later ones are acked (lag 0, leads lost; on a
    partition committed before, it stalls instead). Putting the read offset
    back lets the record through; handling it twice is safe, as every stage
    is idempotent.
    """
    read = self._read_offset
    async for tp, message in _original_getmany(self, timeout):
        last = read.get(tp)
        if last is not None and message.offset < last:
            log.warning(
                "%s[%d]: offset %d fetched below the read offset %d; delivering it "
                "(Faust would drop it unhandled)",
                tp.topic,
                tp.partition,
                message.offset,
                last,
            )
            read[tp] = None
        yield tp, message


async def _gap_not_filled(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Faust's ``_add_gap``, which would count skipped offsets as handled: log only.

    Faust records offsets the fetch skipped (meant for compacted or
    transactional topics; leadflow's stage topics are neither) and commits
    over them. A skip here means records were fetched out of order around a
    rebalance, so the offsets stay unhandled: commits stop before them and
    the partition watchdog seeks back to the committed offset.
    """
    log.warning(
        "%s[%d]: offsets %d-%d skipped by the fetch; not counting them as handled",
        tp.topic,
        tp.partition,
        offset_from,
        offset_to,
    )


def _version(value: Any) -> int | None:
    """The ``version`` field of a table value, when it has one."""
    if isinstance(value, Mapping):
        found = value.get("version")
        if isinstance(found, int):
            return found
    return None


def _apply_changelog_without_regressing(
    self: Any, batch: Iterable[Any], to_key: Any, to_value: Any
) -> None:
    """Faust's in-memory changelog replay, except that a record never replaces a
    newer value already in the table (judged by their ``version`` fields).

    After a rebalance Faust replays a table's changelog into the live table
    for the partitions the worker keeps. A stage that wrote a key while the
    replay ran, or whose changelog record was not in the topic yet, had its
    newer value overwritten by an older record: the table went back a step
    while Postgres kept the newer state.
    """
    kept = []
    for event in batch:
        if event.message.value is not None:
            key = to_key(event.key)
            live = _version(self.data.get(key))
            if live is not None:
                replayed = _version(to_value(event.value))
                if replayed is not None and replayed < live:
                    self._key_partition[key] = event.message.partition
                    continue
        kept.append(event)
    _original_apply_changelog(self, kept, to_key, to_value)


def forget_partitions(tps: Any) -> None:
    """Forget what was held back on partitions this worker no longer owns."""
    for tp in tps:
        _held.pop(tp, None)
        _set_aside.pop(tp, None)
        _start.pop(tp, None)
        _sought_back.pop(tp, None)


async def ack_processed(stream: Any, event: Any) -> bool:
    """Ack ``event``, which a stage finished: it counts even during a rebalance or stop."""
    token = _processed.set(True)
    try:
        return bool(await stream.ack(event))
    finally:
        _processed.reset(token)


def _spinner_on_terminals_only(self: Any, logger: logging.Logger, level: int) -> None:
    if self.spinner is not None and self.spinner.file.isatty():
        _original_spinner_handler(self, logger, level)


async def _learn_with_retries(app: Any, assigned: Any) -> None:
    """:func:`learn_start_offsets`, retried while the broker does not answer and
    the partitions are still ours (until then, partitions the group never
    committed are not committed)."""
    attempt = 0
    while True:
        try:
            await learn_start_offsets(app, assigned)
            return
        except Exception as exc:
            log.warning("reading where partitions start failed (%s); retrying", type(exc).__name__)
        await asyncio.sleep(min(10.0, 0.5 * 2**attempt))
        attempt += 1
        if not set(assigned) & set(app.consumer.assignment()):
            return  # revoked meanwhile: the next assignment learns afresh


def _redeliver_after_rebalances(app: Any) -> None:
    async def redeliver(sender: Any, assigned: Any = (), *args: Any, **kwargs: Any) -> None:
        try:
            await redeliver_set_aside(app)
        except Exception as exc:  # never crash the rebalance; the watchdog re-seeks stalls
            log.warning("redelivery after the rebalance failed (%s)", type(exc).__name__)
        _in_background(_learn_with_retries(app, assigned))  # not inside the rebalance

    async def forget(sender: Any, revoked: Any = (), *args: Any, **kwargs: Any) -> None:
        forget_partitions(revoked)

    app.on_partitions_assigned.connect(redeliver, weak=False)
    app.on_partitions_revoked.connect(forget, weak=False)


def install(app: Any = None) -> None:
    """Install the fixes (idempotent); with ``app``, redeliver after each rebalance."""
    if Event.ack is not _guarded_ack:
        Event.ack = _guarded_ack  # type: ignore[method-assign]
        Consumer._new_offset = _new_offset_below_held  # type: ignore[method-assign]
        Consumer.getmany = _getmany_delivering_rereads  # type: ignore[method-assign]
        Consumer._add_gap = _gap_not_filled  # type: ignore[method-assign]
        ThreadDelegateConsumer._seek = _seek_in_consumer_thread  # type: ignore[method-assign]
        buffer_pauses.install()
        MemoryStore.apply_changelog_batch = _apply_changelog_without_regressing  # type: ignore[method-assign]
        log.debug("faust fix installed: no acks while flow control is suspended")
    Worker._setup_spinner_handler = _spinner_on_terminals_only  # type: ignore[method-assign]
    if app is not None and not getattr(app, "_leadflow_redeliver", False):
        _redeliver_after_rebalances(app)
        app._leadflow_redeliver = True


def installed() -> bool:
    """True once :func:`install` ran."""
    spinner_fixed = Worker._setup_spinner_handler is _spinner_on_terminals_only
    return (
        Event.ack is _guarded_ack
        and spinner_fixed
        and Consumer._new_offset is _new_offset_below_held
        and Consumer.getmany is _getmany_delivering_rereads
        and Consumer._add_gap is _gap_not_filled
        and ThreadDelegateConsumer._seek is _seek_in_consumer_thread
        and buffer_pauses.installed()
        and MemoryStore.apply_changelog_batch is _apply_changelog_without_regressing
    )
