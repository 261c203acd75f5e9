"""``kill -USR2 <worker pid>`` writes every thread's and task's stack to the worker log.

For a worker that does not stop on SIGTERM or stops moving: the dump
(:func:`streams.stack_dump.format_stacks`, no local variables, so no lead
data) says what it waits for. The fault harness sends it before it has to
``kill -9`` a worker that outlived its SIGTERM. (SIGUSR1 is mode's own dump,
which prints local variables, and so may print lead data.)
"""

from __future__ import annotations

import asyncio
import logging
import signal

from streams.app import app
from streams.stack_dump import format_stacks

__all__ = ["dump_stacks"]

log = logging.getLogger(__name__)


def dump_stacks() -> None:
    """Log the stacks of this process at WARNING (seen at every log level we use)."""
    log.warning("stack dump on SIGUSR2:\n%s", format_stacks(asyncio.get_running_loop()))


@app.task  # type: ignore[untyped-decorator]
async def install_stack_dump() -> None:
    """Install the SIGUSR2 handler on the worker's event loop at start-up."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump_stacks)
