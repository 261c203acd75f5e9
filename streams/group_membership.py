"""Keeping a worker in its consumer group when Faust stops fetching (robinhood/faust#517).

aiokafka leaves the consumer group when the application has not fetched for
``broker_max_poll_interval`` seconds, and it rejoins only once the
application fetches again. Faust fetches only while its flow is active and it
has active partitions, and a leave stops the flow until the next assignment,
which needs a rejoin. So a worker that was evicted once never comes back: its
process runs, its web server answers, and it holds no partitions for good.
The same happens to a worker that had no active partitions for longer than
the interval (a standby, or a tenth worker on eight partitions).

Seen in ``make chaos`` "slow provider" (1.5 s per provider call, max poll
interval 5 s): the send stage's stream buffer on ``touch-due`` filled up,
Faust's fetcher waited to put the next record into it (that wait *is*
Faust's backpressure: the fetcher serves every stage of the worker), the
interval passed, both workers were evicted, and nothing moved again.

The fix is a *poke*: entering and leaving aiokafka's fetch context, which is
what a fetch records as activity, without fetching anything. The worker's
timer (:mod:`agents.group_rejoin`) pokes when :func:`poke_reason` says so:

- ``evicted``: the member has left the group and has not fetched for the
  interval. The poke lets aiokafka rejoin; Faust's rebalance then resumes
  the flow.
- ``waiting``: the member is half-way to the interval and Faust is not
  fetching *by design*: its flow is stopped (a rebalance), it has no active
  partitions (a standby), or its fetcher waits on a full stream buffer
  (backpressure from a slow stage). The poke keeps it in the group. A stage
  that makes no progress at all is the partition watchdog's and the
  processing timeout's to report, not a reason to move its partitions to a
  worker that would call the same slow provider.

A fetcher that has work, room in every buffer and still does not fetch is
left to be evicted: that is what the interval exists to detect.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from streams.buffer_pauses import stream_queues

__all__ = ["FetcherView", "PokeReason", "fetcher_waits_in", "poke", "poke_reason", "view_of"]

PokeReason = Literal["evicted", "waiting"]

#: aiokafka's member id before a join and after a leave.
_UNKNOWN_MEMBER_ID = ""


@dataclass(frozen=True)
class FetcherView:
    """What :func:`poke_reason` needs to know about a worker's consumer."""

    #: The consumer is a member of the group (has a member id).
    member: bool
    #: Seconds since the last fetch ended (0 while one is in progress).
    idle_s: float
    #: ``broker_max_poll_interval`` in seconds.
    max_poll_interval_s: float
    #: Faust's fetcher is meant to be fetching: flow active, active partitions.
    fetching: bool
    #: A stream buffer is full: the fetcher waits for a stage (backpressure).
    backpressure: bool = False


def poke_reason(view: FetcherView) -> PokeReason | None:
    """Why the consumer should be poked now, or ``None`` when it should not."""
    if not view.member:
        return "evicted" if view.idle_s >= view.max_poll_interval_s else None
    by_design = not view.fetching or view.backpressure
    if by_design and view.idle_s >= view.max_poll_interval_s / 2:
        return "waiting"
    return None


def view_of(faust_consumer: Any) -> FetcherView | None:
    """The :class:`FetcherView` of Faust's consumer; ``None`` before it has started."""
    client = getattr(getattr(faust_consumer, "_thread", None), "_consumer", None)
    coordinator = getattr(client, "_coordinator", None)
    if client is None or coordinator is None:
        return None
    flow_active = bool(getattr(faust_consumer, "flow_active", True))
    return FetcherView(
        member=coordinator.member_id != _UNKNOWN_MEMBER_ID,
        idle_s=float(client._subscription.fetcher_idle_time),
        max_poll_interval_s=float(coordinator._max_poll_interval),
        fetching=flow_active and bool(faust_consumer._get_active_partitions()),
        backpressure=any(
            queue.full() for queue in stream_queues(getattr(faust_consumer, "app", None))
        ),
    )


async def poke(client: Any) -> None:
    """Record fetch activity on an aiokafka consumer without fetching (runs in its loop)."""
    with client._subscription.fetch_context():
        pass


def fetcher_waits_in() -> str:
    """Where Faust's fetcher task is suspended (``function:line`` chain), for the logs.

    Tells an operator what held the fetcher when the worker was evicted: a
    full stream buffer (``on_message``), the producer (``wait_until_producer_ebb``),
    a rebalance (``acquire_flow_control``) or no active partitions (``sleep``).
    """
    for task in asyncio.all_tasks():
        chain: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None:
            if getattr(coro, "__qualname__", "").endswith("Fetcher._fetcher"):
                chain = ["_fetcher"]  # the fetcher may run inside a service wrapper
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
            if chain and frame is not None:
                chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
        if chain:
            return " > ".join(chain[-4:])
    return "no fetcher task"
