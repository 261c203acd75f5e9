"""``kill -USR2 <worker pid>`` writes every thread's and task's stack to the worker log.

For a worker that does not stop on SIGTERM or stops moving: the dump
(:func:`streams.stack_dump.format_stacks`, no local variables, so no lead
data) says what it waits for. The fault harness sends it before it has to
``kill -9`` a worker that outlived its SIGTERM. (SIGUSR1 is mode's own dump,
which prints local variables, and so may print lead data.)

:func:`install` runs before the worker connects (``streams.cli``) and when
the app is built, so the signal never meets its default action (which ends
the process) while the worker is still starting. Once the worker runs, mode
moves SIGUSR2 onto the event loop and would open ``pdb`` on it (a worker has
no terminal, so it would hang); :func:`install` points that at the dump too.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from types import FrameType
from typing import Any

from mode.worker import Worker

from streams.stack_dump import event_loops, format_stacks

__all__ = ["dump_stacks", "install", "installed"]

log = logging.getLogger(__name__)


def dump_stacks() -> None:
    """Log the stacks of this process at WARNING (seen at every log level we use).

    Includes the asyncio tasks of every event loop: the main one and the
    consumer thread's, where aiokafka's fetches, commits and group calls run.
    """
    log.warning("stack dump on SIGUSR2:\n%s", format_stacks(event_loops()))


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Python runs signal handlers in the main thread, between bytecodes, so
    # this dumps even when the event loop is stuck in a blocking call.
    dump_stacks()


def _on_sigusr2(self: Any) -> None:
    """mode's SIGUSR2 callback, once the worker runs: the dump instead of ``pdb``."""
    dump_stacks()


def install() -> None:
    """Make SIGUSR2 log the stacks, from now on and after the worker starts (idempotent).

    Also turns on :mod:`faulthandler`, so a fatal signal leaves every thread's stack.

    The process-wide handler can only be set from the main thread; from
    another thread only mode's callback is changed.
    """
    Worker._on_sigusr2 = _on_sigusr2  # type: ignore[method-assign]
    # A fatal signal in Python or C code writes the Python stack of every thread
    # to stderr, the worker log (no local values). A fault inside a librdkafka
    # thread, which blocks signals, still ends the process without it.
    faulthandler.enable(all_threads=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR2, _on_signal)


def installed() -> bool:
    """True when SIGUSR2 is ours: the process handler and mode's callback."""
    return (
        signal.getsignal(signal.SIGUSR2) is _on_signal
        and Worker._on_sigusr2 is _on_sigusr2
        and faulthandler.is_enabled()
    )
