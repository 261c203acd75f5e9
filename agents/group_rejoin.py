"""The group-membership timer of the worker (the logic is in :mod:`streams.group_membership`).

Every second it checks whether the worker's consumer was evicted from its
group (or is about to be, while Faust is not fetching by design: a
rebalance, no active partitions, or backpressure from a full stream buffer)
and, if so, pokes aiokafka in the consumer's thread so it rejoins or stays. Without it an evicted
worker never takes partitions again (robinhood/faust#517).
"""

from __future__ import annotations

import logging
from typing import Any

from streams.app import app
from streams.group_membership import fetcher_waits_in, poke, poke_reason, view_of

__all__ = ["POKES", "keep_membership"]

log = logging.getLogger(__name__)

_INTERVAL_S = 1.0

#: Pokes made by this worker, by reason (for health and tests).
POKES: dict[str, int] = {"evicted": 0, "waiting": 0}


async def keep_membership() -> str | None:
    """One check: poke the consumer when :func:`poke_reason` says so; returns the reason."""
    consumer: Any = app.consumer  # Faust's aiokafka consumer (its thread is private)
    view = view_of(consumer)
    reason = None if view is None else poke_reason(view)
    if view is None or reason is None:
        return None
    POKES[reason] += 1
    if reason == "evicted":
        log.warning(
            "consumer left the group after %.0f s without fetching (max poll interval "
            "%.0f s; the fetcher waits in %s); rejoining",
            view.idle_s,
            view.max_poll_interval_s,
            fetcher_waits_in(),
        )
    else:
        log.info("not fetching for %.0f s by design: keeping the group membership", view.idle_s)
    thread = consumer._thread
    await thread.call_thread(poke, thread._consumer)
    return reason


@app.timer(interval=_INTERVAL_S, name="group-rejoin")  # type: ignore[untyped-decorator]
async def group_rejoin() -> None:
    """Run :func:`keep_membership`; a timer must survive whatever a check raises."""
    try:
        await keep_membership()
    except Exception as exc:
        log.info("group membership check failed (%s); next check retries", type(exc).__name__)
