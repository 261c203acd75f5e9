"""A fix for a Faust behaviour that loses events at shutdown and on rebalance.

faust-streaming 0.15's ``Stream._py_aiter`` skips an event it takes off a
channel while flow control is suspended (the worker is stopping, or a
rebalance is under way) or whose message belongs to an older consumer
generation, and then **acks** it "so the lag does not grow". Nothing
processed that event, yet its offset becomes committable: a touch released a
few milliseconds before a SIGTERM, or fetched just before a rebalance, is
committed and never handled. (Seen in leadflow's restart test: leads left in
``in_sequence`` whose ``touch-due`` record no stage ever saw, with the
group's offset past it.)

:func:`install` wraps ``faust.events.Event.ack`` so an ack is refused while
flow control is suspended or when the message is from an older generation.
The event then stays uncommitted and Kafka delivers it again after the
restart or rebalance. The cost is that an event the stage *did* finish in
that window is delivered again too; every stage is idempotent, so that is
safe (at-least-once).
"""

from __future__ import annotations

import logging
from typing import Any

from faust.events import Event

__all__ = ["install", "installed"]

log = logging.getLogger(__name__)

_original_ack = Event.ack


def _guarded_ack(self: Any) -> bool:
    app = self.app
    if not app.flow_control.is_active() or (
        getattr(self.message, "generation_id", None) != app.consumer_generation_id
    ):
        return False  # not processed for sure: leave it uncommitted, Kafka redelivers it
    return bool(_original_ack(self))


def install() -> None:
    """Refuse acks of events Faust skipped for a stop or a rebalance (idempotent)."""
    if Event.ack is not _guarded_ack:
        Event.ack = _guarded_ack  # type: ignore[method-assign]
        log.debug("faust fix installed: no acks while flow control is suspended")


def installed() -> bool:
    """True once :func:`install` ran."""
    return Event.ack is _guarded_ack
