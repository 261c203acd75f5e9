"""The partition watchdog timer of the worker (the logic is in :mod:`streams.watchdog`).

Every ``LEADFLOW_WATCHDOG_INTERVAL_S`` it reads the committed and end offsets of
the stages' assigned input partitions; a partition stalled for
``LEADFLOW_WATCHDOG_STALL_S`` is logged (no lead data), resumed, and sought
back to its committed offset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from streams.app import app
from streams.lag import STAGE_INPUT_TOPICS
from streams.settings import get_settings
from streams.watchdog import Position, Stall, StallDetector, WatchdogSettings

__all__ = ["STALLS", "nudge", "positions"]

log = logging.getLogger(__name__)

#: Stalls seen by this worker (newest last, at most 100), for health and tests.
STALLS: list[Stall] = []


async def positions(consumer: Any, topics: Iterable[str]) -> dict[Any, Position]:
    """Committed offsets and the broker's end offsets of the assigned partitions of ``topics``.

    End offsets are asked of the broker: Faust only learns a partition's
    high-water mark from a fetch, and a stalled partition is not fetched.
    """
    wanted = set(topics)
    tps = [tp for tp in consumer.assignment() if tp.topic in wanted]
    if not tps:
        return {}
    committed = consumer._committed_offset  # Faust keeps the last committed offsets here
    ends = await consumer.highwaters(*tps)
    return {tp: Position(committed.get(tp), ends.get(tp)) for tp in tps}


async def nudge(consumer: Any, stall: Stall) -> None:
    """Resume a stalled partition and re-fetch it from its committed offset."""
    log.warning(
        "watchdog: %s[%d] stalled for %.0f s (committed %d, end %d): resuming and seeking "
        "to the committed offset",
        stall.tp.topic,
        stall.tp.partition,
        stall.stalled_for_s,
        stall.committed,
        stall.end,
    )
    consumer.resume_partitions([stall.tp])
    await consumer.seek(stall.tp, stall.committed)


def _register() -> None:
    """Run the watchdog as a timer of the worker (unless turned off)."""
    config = WatchdogSettings.from_env()
    if config.interval_s <= 0:
        return
    topics = {get_settings().topic_name(t) for t in STAGE_INPUT_TOPICS.values()}
    detector = StallDetector(config.stall_s)

    log.info(
        "watchdog: checking input partitions every %.0f s (stalled after %.0f s)",
        config.interval_s,
        config.stall_s,
    )

    @app.timer(interval=config.interval_s, name="partition-watchdog")  # type: ignore[untyped-decorator]
    async def partition_watchdog() -> None:
        consumer = app.consumer
        try:
            seen = await positions(consumer, topics)
        except Exception as exc:  # a timer must survive a broker blip or a rebalance
            log.info(
                "watchdog: could not read offsets (%s); next check retries", type(exc).__name__
            )
            return
        for stall in detector.observe(seen, time.monotonic()):
            STALLS.append(stall)
            del STALLS[:-100]
            await nudge(consumer, stall)


_register()
