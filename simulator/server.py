"""Run the simulator's HTTP and SMTP servers and webhook sender together.

::

    async with run_simulator(SimConfig(port=0, smtp_port=0, seed=1)) as sim:
        sim.http_url      # "http://127.0.0.1:41234"
        sim.smtp_host     # "127.0.0.1"
        sim.smtp_port     # 40321
        sim.ledger        # accepted messages, duplicates, counters
        await sim.webhooks_idle()

Port 0 binds a free port. A port already taken raises
:class:`~streams.errors.PortInUseError`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from simulator.behaviour import Clock
from simulator.config import SimConfig
from simulator.http_app import make_app
from simulator.ledger import Ledger
from simulator.smtp import start_smtp_server
from simulator.state import SimState
from streams.errors import PortInUseError

__all__ = ["Simulator", "run_simulator"]

log = logging.getLogger("leadflow.sim")


class Simulator:
    """A running simulator: its addresses and its live state."""

    def __init__(self, state: SimState, http_url: str, smtp_host: str, smtp_port: int) -> None:
        self.state = state
        #: Base URL of the HTTP API, e.g. ``http://127.0.0.1:8099``.
        self.http_url = http_url
        #: Host and port of the SMTP server.
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port

    @property
    def config(self) -> SimConfig:
        """The live configuration."""
        return self.state.config

    @property
    def ledger(self) -> Ledger:
        """Accepted messages, duplicate detection and counters."""
        return self.state.ledger

    def stats(self) -> dict[str, Any]:
        """The same data as ``GET /_sim/stats``."""
        return self.state.stats()

    def update_config(self, data: Mapping[str, Any]) -> SimConfig:
        """Like ``POST /_sim/config``; raises ConfigError."""
        return self.state.update_config(data)

    async def webhooks_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until no webhook is pending (TimeoutError after ``timeout_s``)."""
        await self.state.webhooks.idle(timeout_s)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port_error(exc: OSError, host: str, port: int, what: str, flag: str) -> Exception:
    if exc.errno == errno.EADDRINUSE:
        return PortInUseError(
            f"{what} port {port} on {host} is already in use; pick another with {flag}"
        )
    return PortInUseError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}")


@asynccontextmanager
async def run_simulator(
    config: SimConfig, *, clock: Clock = time.monotonic, wall: Clock = time.time
) -> AsyncIterator[Simulator]:
    """Start the simulator for the ``async with`` block, then shut it down cleanly.

    ``clock`` (monotonic seconds) drives outages, rate limits and webhook delays;
    ``wall`` (unix seconds) stamps messages and webhook signatures.
    """
    state = SimState(config, clock=clock, wall=wall)
    runner = web.AppRunner(make_app(state), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    smtp: asyncio.Server | None = None
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as exc:
            raise _port_error(exc, config.host, config.port, "HTTP", "--port") from None
        http_host, http_port = runner.addresses[0][:2]
        try:
            smtp = await start_smtp_server(state, config.host, config.smtp_port)
        except OSError as exc:
            raise _port_error(exc, config.host, config.smtp_port, "SMTP", "--smtp-port") from None
        smtp_host, smtp_port = smtp.sockets[0].getsockname()[:2]
        state.http_url = f"http://{_url_host(http_host)}:{http_port}"
        state.smtp_host, state.smtp_port = smtp_host, smtp_port
        await state.webhooks.start()
        yield Simulator(state, state.http_url, smtp_host, smtp_port)
    finally:
        state.closing.set()
        await state.webhooks.close()
        if smtp is not None:
            smtp.close()
            await smtp.wait_closed()
        await runner.cleanup()
