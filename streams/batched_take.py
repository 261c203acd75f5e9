"""Batches of a Faust stream's events, without acking them, and asleep while idle.

Faust's ``Stream.noack_take(max_, within)`` wakes every ``within`` seconds
whether or not an event came: each of the worker's eight stage agents then
runs mode's ``wait_for_stopped`` machinery (tasks, futures, timers) twenty
times a second at the default 50 ms, which was half of an idle worker's CPU
(py-spy, session 8). :func:`take_batches` is the same generator with one
change: while its buffer is empty it waits for the first event with no
timeout, and the ``within`` window starts when that event arrives. A batch
still goes out at ``max_`` events or ``within`` seconds after its first
event, whichever comes first, so no event waits longer than before.

Like ``noack_take`` it turns the stream's acks off while it runs (the stage
runner acks each event once its effects are durable), restores them when the
generator is closed, and never yields more than ``max_`` events: the stream's
processor waits for a full batch to be taken before adding to it.

Each running generator is listed (:func:`takers_idle`), so a worker's stop
can tell when no agent holds an event any more: Faust's stop suspends flow
control and empties the streams' queues, so events it had fetched but not
yet handed to an agent stay "unacked" with no one left to ack them
(:mod:`streams.shutdown_drain` then stops waiting for them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from mode.utils.aiter import aiter
from mode.utils.futures import notify

__all__ = ["TakeBatches", "take_batches", "takers_idle", "takers_running"]

log = logging.getLogger(__name__)

#: ``take(stream, max_, within)``: an async generator of event batches.
TakeBatches = Callable[[Any, int, float], AsyncGenerator[list[Any], None]]


class _Taker:
    """What one running :func:`take_batches` holds: buffer, an event being added, a batch out."""

    __slots__ = ("adding", "buffer", "out", "stream")

    def __init__(self, stream: Any, buffer: list[Any]) -> None:
        self.stream = stream
        self.buffer = buffer
        self.adding = 0
        self.out = False

    def idle(self) -> bool:
        """No event in the buffer, on its way in, in a batch being handled or in the queue."""
        if self.buffer or self.adding or self.out:
            return False
        queue = getattr(getattr(self.stream, "channel", None), "queue", None)
        return queue is None or queue.empty()


#: The generators running now (one per agent actor).
_takers: set[_Taker] = set()


def takers_running() -> int:
    """How many :func:`take_batches` generators are running."""
    return len(_takers)


def takers_idle() -> bool:
    """True when no running :func:`take_batches` holds or is receiving an event."""
    return all(taker.idle() for taker in _takers)


async def take_batches(stream: Any, max_: int, within: float) -> AsyncGenerator[list[Any], None]:
    """Yield lists of up to ``max_`` events of ``stream`` (a Faust ``Stream``), unacked.

    A list is yielded when it is full, or ``within`` seconds after its first
    event arrived. Mirrors faust-streaming 0.15's ``Stream.noack_take``.
    """
    buffer: list[Any] = []
    started = asyncio.Event()  # the buffer holds at least one event
    full = asyncio.Event()
    consumed = asyncio.Event()
    taking: asyncio.Future[None] | None = None
    acks_were = stream.enable_acks
    taker = _Taker(stream, buffer)

    async def add_to_buffer(value: Any) -> Any:
        nonlocal taking
        taker.adding += 1
        try:
            if taking is not None:  # a batch is being handled: wait until it is taken
                try:
                    await taking
                finally:
                    taking = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take_batches: the stream has no current event")
            buffer.append(event)
            started.set()
            if len(buffer) >= max_:
                full.set()
                consumed.clear()
                await stream.wait(consumed)  # never more than max_ in one batch
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # as noack_take: a broken buffer crashes the stream
            log.exception("take_batches: adding to the batch failed: %r", exc)
            await stream.crash(exc)
        finally:
            taker.adding -= 1
        return value

    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    _takers.add(taker)
    try:
        while not stream.should_stop:
            if not buffer:
                await stream.wait_for_stopped(started)  # idle: sleep until an event
            if buffer and not full.is_set():
                await stream.wait_for_stopped(full, timeout=within)
            if not buffer:
                continue
            taking = stream.loop.create_future()
            taker.out = True
            try:
                yield list(buffer)
            finally:
                taker.out = False
                buffer.clear()
                started.clear()
                notify(taking)  # let the processor add to the next batch
                full.clear()
                consumed.set()
    finally:
        _takers.discard(taker)
        stream.enable_acks = acks_were
        stream._processors.remove(add_to_buffer)
