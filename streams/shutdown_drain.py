"""A worker stopping on SIGTERM waits a bounded time for events it already took.

Faust's stop runs ``Consumer.wait_empty``: it waits, without a bound, until
every message a stream has taken is acked, then commits. In the fault
suite's rebalance storm a worker SIGTERM'd in the middle of a rebalance
waited for one ``sent`` event for longer than 25 s (its log: ``wait_empty:
Waiting for tasks [(1, <ConsumerMessage: ...-sent[4] offset=2170>)]``) and
had to be killed with ``-9``.

:func:`install` bounds that wait at shutdown only (a rebalance still waits,
as Faust does): ``LEADFLOW_SHUTDOWN_DRAIN_S`` (default 10 s) from the signal
(or from the app's stop when there was none). When it runs out, the worker
logs what is still unacked (topic, partition, offset; no record data),
commits what was handled (never past an unhandled offset: Faust commits only
a contiguous acked run) and goes on stopping. The events left over are
handled again by whichever worker takes the partition, which the stages make
safe (idempotent sends and state writes). It is what a ``kill -9`` at that
moment would leave, but with the handled offsets committed and the group
left cleanly.

It also ends early, at once, when no agent holds an event any more (every
:func:`~streams.batched_take.take_batches` idle for
:data:`IDLE_GRACE_S`): Faust's stop suspends flow control and empties the
streams' queues before this wait, so events it had fetched but not yet handed
to an agent (one of the two agents reading ``sent``, say) stay unacked with
no one left to ack them. Waiting for those only cost the full drain time
(session 10: 8 of 68 stops mid-campaign took 11.6-12.7 s instead of 2 s).

The rest of the stop has waits of its own (the storm run caught one in the
consumer thread's stop, which mode bounds only at 60 s), so the whole stop is
bounded too: ``LEADFLOW_STOP_TIMEOUT_S`` (default 20 s) after the signal, a
worker still stopping logs every thread's and event loop's stack (no local
variables) and exits with status 70. Nothing is lost: what it did not commit
is handled again, as after a ``kill -9``, which is what a supervisor would
have sent next anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiokafka.consumer.group_coordinator import GroupCoordinator
from faust.app.base import App
from faust.transport.consumer import Consumer
from mode.worker import Worker

from streams.batched_take import takers_idle, takers_running
from streams.stack_dump import event_loops, format_stacks

__all__ = [
    "CLOSE_JOIN_WAIT_S",
    "EXIT_STOP_OVERDUE",
    "IDLE_GRACE_S",
    "agents_idle",
    "arm_stop_timeout",
    "install",
    "installed",
    "wait_empty_until",
]

log = logging.getLogger(__name__)

_ORIGINAL_WAIT_EMPTY: Callable[[Any], Coroutine[Any, Any, None]] = Consumer.wait_empty
_ORIGINAL_STOP_CONSUMER: Callable[[Any], Coroutine[Any, Any, None]] = App._stop_consumer
_ORIGINAL_STOP_ON_SIGNAL: Callable[[Any, Any], Coroutine[Any, Any, None]] = Worker._stop_on_signal

#: When the stop began (monotonic): the SIGTERM, or the app's own stop.
#: The drain counts from here, since the worker stops other services (its web
#: server, for one) before the consumer, and that took 15 s in the storm run.
_stop_started: list[float] = []

#: Seconds every agent must have held no event before the drain stops waiting.
IDLE_GRACE_S = 0.5

#: Attribute on the app: monotonic deadline of the stop's drain (unset: no stop under way).
_DEADLINE = "_leadflow_drain_deadline"


def _unacked(consumer: Any) -> list[str]:
    return sorted(
        f"{m.tp.topic}[{m.tp.partition}]@{m.offset}" for m in list(consumer._unacked_messages)
    )


async def wait_empty_until(
    consumer: Any, deadline: float, *, idle: Callable[[], bool] | None = None
) -> bool:
    """Faust's ``wait_empty`` until ``deadline`` (monotonic); True when everything was acked.

    With ``idle`` (true when no agent holds an event and none can arrive), it
    also stops once ``idle()`` has held for :data:`IDLE_GRACE_S`: what is
    still unacked then was fetched but never reached an agent. Either way it
    ends with Faust's final commit of what was handled.
    """
    idle_since: float | None = None
    while not consumer.should_stop and consumer._unacked_messages:
        now = time.monotonic()
        if now >= deadline:
            left = _unacked(consumer)
            if getattr(consumer, "_leadflow_drain_logged", False):
                break  # said once already (the stop waits twice: app, then consumer)
            consumer._leadflow_drain_logged = True
            log.warning(
                "stopping: %d event(s) still not handled after the drain time "
                "(LEADFLOW_SHUTDOWN_DRAIN_S); committing what was handled and "
                "leaving them to be handled again: %s",
                len(left),
                ", ".join(left[:20]),
            )
            break
        if idle is not None and idle():
            idle_since = now if idle_since is None else idle_since
            if now - idle_since >= IDLE_GRACE_S:
                left = _unacked(consumer)
                log.info(
                    "stopping: %d event(s) were fetched but never reached an agent (the "
                    "stop emptied the streams' queues); committing what was handled and "
                    "leaving them to be handled again: %s",
                    len(left),
                    ", ".join(left[:20]),
                )
                break
        else:
            idle_since = None
        gc.collect()  # the unacked set is weak: drop messages nobody holds any more
        await consumer.commit()
        if not consumer._unacked_messages:
            break
        await consumer._wait_for_ack(timeout=1 if idle is None else IDLE_GRACE_S / 2)
        consumer._clean_unacked_messages()
    drained = not consumer._unacked_messages
    await consumer.commit_and_end_transactions()
    return drained


def agents_idle(app: Any) -> bool:
    """True when every agent of ``app`` takes through ``take_batches`` and holds no event."""
    return takers_running() >= len(app.agents) > 0 and takers_idle()


async def _wait_empty(self: Any) -> None:
    deadline = getattr(self.app, _DEADLINE, None)
    if deadline is None:  # a rebalance: Faust's own wait
        await _ORIGINAL_WAIT_EMPTY(self)
        return
    await wait_empty_until(self, deadline, idle=lambda: agents_idle(self.app))


#: Exit status of a worker whose stop ran past LEADFLOW_STOP_TIMEOUT_S (EX_SOFTWARE).
EXIT_STOP_OVERDUE = 70

#: Seconds from the signal after which a stop still under way ends the process (0: never).
_stop_timeout_s: list[float] = [0.0]

#: How the overdue stop ends the process (a test replaces it).
_exit: Callable[[int], object] = os._exit


def _stop_overdue(timeout_s: float) -> None:
    """Log where the stop waits, then end the process (runs in the timer's thread)."""
    log.error(
        "stopping: still not stopped %g s after the signal (LEADFLOW_STOP_TIMEOUT_S); "
        "exiting with status %d without the rest of the stop. Uncommitted events are "
        "handled again by the next owner of their partition. Where it waited:\n%s",
        timeout_s,
        EXIT_STOP_OVERDUE,
        format_stacks(event_loops()),
    )
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    _exit(EXIT_STOP_OVERDUE)


def arm_stop_timeout(timeout_s: float) -> threading.Timer | None:
    """Start the timer that ends a stop running past ``timeout_s`` (None when 0: no bound)."""
    if timeout_s <= 0:
        return None
    timer = threading.Timer(timeout_s, _stop_overdue, args=(timeout_s,))
    timer.name = "leadflow-stop-timeout"
    timer.daemon = True  # a stop that ends in time is not held up by it
    timer.start()
    return timer


async def _stop_on_signal(self: Any, sig: Any) -> None:
    if not _stop_started:
        _stop_started.append(time.monotonic())
        arm_stop_timeout(_stop_timeout_s[0])
    await _ORIGINAL_STOP_ON_SIGNAL(self, sig)


def _stop_consumer_with(drain_s: float) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def _stop_consumer(self: Any) -> None:
        if getattr(self, _DEADLINE, None) is None:
            started = _stop_started[0] if _stop_started else time.monotonic()
            setattr(self, _DEADLINE, started + drain_s)
        await _ORIGINAL_STOP_CONSUMER(self)

    _stop_consumer.leadflow_drain_s = drain_s  # type: ignore[attr-defined]
    return _stop_consumer


#: At a stop, how long the consumer's close waits for a group join in flight.
#: A JoinGroup is held by the broker until every member rejoins (up to the
#: rebalance timeout, minutes), and aiokafka's close waits for it.
CLOSE_JOIN_WAIT_S = 5.0


async def _close_coordinator(self: Any) -> None:
    """aiokafka's ``GroupCoordinator.close``, with the wait for a join in flight bounded.

    In the storm run, stops stuck here for good: a worker SIGTERM'd during a
    rebalance sat in ``close`` awaiting its JoinGroup while the broker waited
    for the other members. After :data:`CLOSE_JOIN_WAIT_S` the join is
    cancelled and the worker leaves the group, which also lets the rebalance
    go on without it. Offsets were committed before this (Faust's stop
    commits first). The rest mirrors aiokafka 0.14's ``close``.
    """
    if self._closing.done():
        return
    self._closing.set_result(None)
    task = self._coordination_task
    if not task.done():
        done, _ = await asyncio.wait([task], timeout=CLOSE_JOIN_WAIT_S)
        if not done:
            log.warning(
                "stopping: the consumer group's join was still waiting on the broker "
                "after %g s (a rebalance under way); leaving the group without it",
                CLOSE_JOIN_WAIT_S,
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    await self._stop_heartbeat_task()
    await self._stop_commit_offsets_refresh_task()
    await self._maybe_leave_group()


def install(drain_s: float, stop_timeout_s: float = 0.0) -> None:
    """Bound the stop's wait for unacked events to ``drain_s`` seconds (idempotent).

    With ``stop_timeout_s`` > 0, a stop on a signal that is still under way
    that many seconds after the signal logs the stacks and exits with
    :data:`EXIT_STOP_OVERDUE`.
    """
    _stop_timeout_s[0] = stop_timeout_s
    GroupCoordinator.close = _close_coordinator
    Consumer.wait_empty = _wait_empty  # type: ignore[method-assign]
    Worker._stop_on_signal = _stop_on_signal  # type: ignore[method-assign,assignment]
    App._stop_consumer = _stop_consumer_with(drain_s)  # type: ignore[method-assign,assignment]


def installed() -> bool:
    """True once :func:`install` ran."""
    return (
        Consumer.wait_empty is _wait_empty
        and Worker._stop_on_signal is _stop_on_signal
        and hasattr(App._stop_consumer, "leadflow_drain_s")
        and GroupCoordinator.close is _close_coordinator
    )
