"""Two fixes for faust-streaming 0.15, installed when the worker's app is built.

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

:func:`install` wraps ``faust.events.Event.ack`` so an ack is refused while
flow control is suspended or when the message is from an older generation.
The event then stays uncommitted and Kafka delivers it again after the
restart or rebalance. The cost is that an event the stage *did* finish in
that window is delivered again too; every stage is idempotent, so that is
safe (at-least-once).

2. **DEBUG logging at ``-l warn``.** Faust's worker adds its terminal spinner's
log handler whenever the level is WARN or above and sets the root logger to
DEBUG for it, even when stdout is a file. Every aiokafka and Faust debug call
then builds a log record: 6 % of a busy worker's CPU in a py-spy profile
(docs/BENCHMARKS.md). :func:`install` keeps the spinner for terminals only.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.events import Event
from faust.worker import Worker

__all__ = ["install", "installed"]

log = logging.getLogger(__name__)

_original_ack = Event.ack
_original_spinner_handler = Worker._setup_spinner_handler


def _guarded_ack(self: Any) -> bool:
    app = self.app
    if not app.flow_control.is_active() or (
        getattr(self.message, "generation_id", None) != app.consumer_generation_id
    ):
        return False  # not processed for sure: leave it uncommitted, Kafka redelivers it
    return bool(_original_ack(self))


def _spinner_on_terminals_only(self: Any, logger: logging.Logger, level: int) -> None:
    if self.spinner is not None and self.spinner.file.isatty():
        _original_spinner_handler(self, logger, level)


def install() -> None:
    """Install both fixes (idempotent)."""
    if Event.ack is not _guarded_ack:
        Event.ack = _guarded_ack  # type: ignore[method-assign]
        log.debug("faust fix installed: no acks while flow control is suspended")
    Worker._setup_spinner_handler = _spinner_on_terminals_only  # type: ignore[method-assign]


def installed() -> bool:
    """True once :func:`install` ran."""
    spinner_fixed = Worker._setup_spinner_handler is _spinner_on_terminals_only
    return Event.ack is _guarded_ack and spinner_fixed
