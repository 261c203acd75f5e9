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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any

from mode.utils.aiter import aiter
from mode.utils.futures import notify

__all__ = ["TakeBatches", "take_batches"]

log = logging.getLogger(__name__)

#: ``take(stream, max_, within)``: an async generator of event batches.
TakeBatches = Callable[[Any, int, float], AsyncGenerator[list[Any], None]]


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

    async def add_to_buffer(value: Any) -> Any:
        nonlocal taking
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
        return value

    stream.enable_acks = False
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            if not buffer:
                await stream.wait_for_stopped(started)  # idle: sleep until an event
            if buffer and not full.is_set():
                await stream.wait_for_stopped(full, timeout=within)
            if not buffer:
                continue
            taking = stream.loop.create_future()
            try:
                yield list(buffer)
            finally:
                buffer.clear()
                started.clear()
                notify(taking)  # let the processor add to the next batch
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = acks_were
        stream._processors.remove(add_to_buffer)
