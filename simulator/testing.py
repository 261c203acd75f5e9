"""Helpers for tests and benchmarks that run against the simulator.

* :func:`ephemeral_config` — a config on ephemeral ports with a fixed seed;
* :func:`fast_webhooks` — a webhook section with no delay and no random events;
* :class:`WebhookReceiver` — a stand-in for the pipeline's webhook endpoint that
  verifies signatures with :func:`providers.signing.verify` and records events.

::

    async with WebhookReceiver(secret) as receiver, run_simulator(
        ephemeral_config(webhooks=fast_webhooks(receiver.url, secret, delivery_rate=1.0))
    ) as sim:
        ...
        await sim.webhooks_idle()
        assert receiver.kinds() == ["delivery"]
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any

from aiohttp import web

from providers.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayCache,
    WebhookSignatureError,
    verify,
)
from simulator.config import SimConfig, config_from_mapping
from simulator.server import Simulator

__all__ = [
    "JsonPost",
    "StartSim",
    "WebhookReceiver",
    "ephemeral_config",
    "fast_webhooks",
]

#: ``async with start_sim(**overrides) as sim`` (a pytest fixture's type).
StartSim = Callable[..., AbstractAsyncContextManager[Simulator]]
#: ``status, json_body, headers = await post(url, body, headers)``.
JsonPost = Callable[..., Awaitable[tuple[int, Any, Any]]]


def ephemeral_config(**overrides: Any) -> SimConfig:
    """A config on ephemeral ports (0) with seed 7, ``overrides`` merged in."""
    data: dict[str, Any] = {"port": 0, "smtp_port": 0, "seed": 7}
    data.update(overrides)
    return config_from_mapping(data)


def fast_webhooks(url: str, secret: str, **overrides: Any) -> dict[str, Any]:
    """A webhook config section: no delay, quick retries, no events unless asked."""
    data: dict[str, Any] = {
        "url": url,
        "secret": secret,
        "delay": 0,
        "backoff_s": 0.02,
        "delivery_rate": 0.0,
        "reply_rate": 0.0,
        "opt_out_rate": 0.0,
        "help_rate": 0.0,
        "bounce_rate": 0.0,
    }
    data.update(overrides)
    return data


class WebhookReceiver:
    """A local HTTP endpoint that verifies webhook signatures and records what came in.

    Answers 200 to a good webhook, 401 with the contract's error body to a bad
    signature, and 503 to the first ``fail_first`` requests (to exercise retries).
    """

    def __init__(
        self, secret: str | bytes, *, host: str = "127.0.0.1", path: str = "/webhooks/sim"
    ) -> None:
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self.host = host
        self.path = path
        self.url = ""
        self.fail_first = 0
        self.requests = 0
        self.events: list[dict[str, Any]] = []
        #: ``reason`` of every rejected webhook, in order.
        self.rejected: list[str] = []
        self.seen = ReplayCache()
        self._runner: web.AppRunner | None = None

    def kinds(self) -> list[str]:
        """The ``kind`` of every accepted event, in arrival order."""
        return [str(e["kind"]) for e in self.events]

    async def start(self) -> None:
        """Listen on an ephemeral port; ``url`` is set afterwards."""
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{port}{self.path}"

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WebhookReceiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response(
                {"error": {"code": "unavailable", "message": "receiver is down"}}, status=503
            )
        try:
            verify(
                self.secret,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
                body,
                now=time.time(),
                seen=self.seen,
            )
        except WebhookSignatureError as exc:
            self.rejected.append(exc.reason)
            return web.json_response(
                {"error": {"code": exc.reason, "message": str(exc)}}, status=401
            )
        self.events.append(json.loads(body))
        return web.json_response({"ok": True})
