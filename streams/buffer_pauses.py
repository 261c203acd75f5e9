"""A Faust fix: a partition paused for a full stream buffer stays paused until it drains.

Faust pauses a partition when its stream buffer passes 80 %
(``Consumer.on_buffer_full``) and resumes it when the buffer has drained to
40 % (the queue's pending *pressure-drop* callback). Two things undo the
pause early, after which the partition is never paused again:

- ``resume_partitions``, which table recovery calls for every assigned
  partition after each rebalance (and the partition watchdog for a stalled
  one), makes a buffer-paused partition active again while its
  pressure-drop callback is still pending;
- each assignment makes every assigned partition active, again with stale
  pending callbacks (the buffers were cleared).

A queue only pauses a partition whose callback is not pending, so from then
on the partition's records keep coming until the buffer is full, and Faust's
fetcher, which serves every stage of the worker, waits on it: one slow
provider held up all stages. Seen in ``make chaos`` "slow": the send stage's
``touch-due`` buffer full (1024 of 1024) with its partitions active.

:func:`install` wraps both: ``resume_partitions`` leaves buffer-paused
partitions to their buffer, and an assignment starts every buffer afresh
(no partition buffer-paused, no callback pending), so the next event over
the mark pauses its partition again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.transport.consumer import Consumer

__all__ = ["install", "installed", "stream_queues"]

_original_resume = Consumer.resume_partitions
_original_assigned = Consumer.on_partitions_assigned


def stream_queues(app: Any) -> list[Any]:
    """The stream buffers Faust's conductor delivers fetched records to (those created yet)."""
    channels = list(getattr(getattr(app, "topics", None), "_topics", ()))
    queues = (getattr(channel, "_queue", None) for channel in channels)  # made on first use
    return [queue for queue in queues if queue is not None]


def _resume_unless_buffer_paused(self: Any, tps: Iterable[Any]) -> None:
    """Faust's ``resume_partitions``, except for partitions paused by their buffer."""
    _original_resume(self, tps)
    self._get_active_partitions().difference_update(self._buffered_partitions)


async def _assigned_with_fresh_buffers(self: Any, assigned: Any, generation_id: int = 0) -> None:
    """Faust's ``on_partitions_assigned``, forgetting buffer pauses and pending callbacks."""
    self._buffered_partitions.clear()
    for queue in stream_queues(self.app):
        queue._pending_pressure_drop_callbacks.clear()
    await _original_assigned(self, assigned, generation_id)


def install() -> None:
    """Wrap Faust's consumer (idempotent)."""
    Consumer.resume_partitions = _resume_unless_buffer_paused  # type: ignore[method-assign]
    Consumer.on_partitions_assigned = _assigned_with_fresh_buffers  # type: ignore[method-assign]


def installed() -> bool:
    """True once :func:`install` ran."""
    return (
        Consumer.resume_partitions is _resume_unless_buffer_paused
        and Consumer.on_partitions_assigned is _assigned_with_fresh_buffers
    )
