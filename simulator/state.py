"""The state the HTTP and SMTP front ends share: config, behaviours, ledger, webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from simulator.behaviour import Clock, EndpointBehaviour
from simulator.config import ENDPOINTS, SimConfig, apply_overrides
from simulator.ledger import Ledger, SentMessage
from simulator.webhooks import WebhookSender, plan_for
from streams.errors import ConfigError

__all__ = ["SimState"]

log = logging.getLogger("leadflow.sim")


def _rng(seed: int | None, name: str) -> random.Random:
    # A string seed is hashed with SHA-512 by random, so it is stable across runs.
    return random.Random(f"{seed}:{name}") if seed is not None else random.Random()


class SimState:
    """Config, per-endpoint behaviour, the ledger and the webhook sender of one simulator."""

    def __init__(
        self, config: SimConfig, *, clock: Clock = time.monotonic, wall: Clock = time.time
    ) -> None:
        self.config = config
        self.clock = clock
        self.wall = wall
        self.started_at = clock()
        self.ledger = Ledger()
        self.behaviours = {
            name: EndpointBehaviour(
                name,
                config.endpoint(name),
                _rng(config.seed, f"endpoint:{name}"),
                clock=clock,
                started_at=self.started_at,
            )
            for name in ENDPOINTS
        }
        self.webhooks = WebhookSender(
            config.webhooks, _rng(config.seed, "webhooks"), clock=clock, wall=wall
        )
        #: Set when the simulator shuts down; hanging requests end early.
        self.closing = asyncio.Event()
        #: Filled in by the server once the ports are bound.
        self.http_url = ""
        self.smtp_host = config.host
        self.smtp_port = 0
        self._ids = _rng(config.seed, "ids")
        self._plans = _rng(config.seed, "plans")

    async def hang(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the simulator is shutting down."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.closing.wait()

    def uptime_s(self) -> float:
        """Seconds since the simulator started."""
        return self.clock() - self.started_at

    def new_message_id(self, channel: str) -> str:
        """A fresh provider message id such as ``sms_3f9c...``."""
        return f"{channel}_{self._ids.getrandbits(96):024x}"

    def accept(
        self,
        *,
        channel: str,
        campaign_id: str,
        lead_id: str,
        touch: int,
        recipient: str,
        idempotency_key: str | None,
        clock: str | None,
        provider_message_id: str | None = None,
        response_lost: bool = False,
    ) -> SentMessage:
        """Record an accepted message and schedule the webhooks it will draw."""
        message = self.ledger.record(
            provider_message_id=provider_message_id or self.new_message_id(channel),
            channel=channel,
            campaign_id=campaign_id,
            lead_id=lead_id,
            touch=touch,
            recipient=recipient,
            idempotency_key=idempotency_key,
            clock=clock,
            accepted_at=self.wall(),
            response_lost=response_lost,
        )
        log.debug(
            "%s accepted id=%s campaign=%s lead=%s touch=%d%s",
            channel, message.provider_message_id, campaign_id, lead_id, touch,
            " (response dropped)" if response_lost else "",
        )  # fmt: skip
        if self.webhooks.enabled:
            for delay_s, event in plan_for(
                message, self.config.webhooks, self._plans, time_scale=self.config.time_scale
            ):
                self.webhooks.schedule(event, delay_s)
        return message

    def update_config(self, data: Mapping[str, Any]) -> SimConfig:
        """Merge a partial config mapping into the live config (ConfigError if invalid).

        Only behaviour can change at run time: ports, host and seed are fixed.
        """
        for key in ("host", "port", "smtp_port", "seed"):
            if key in data:
                raise ConfigError(f"simulator config: {key} cannot change at run time")
        config = apply_overrides(self.config, data, uptime_s=self.uptime_s())
        self.config = config
        for name, behaviour in self.behaviours.items():
            behaviour.update(config.endpoint(name))
        self.webhooks.update(config.webhooks)
        return config

    def reset(self) -> None:
        """Forget messages, counters, rate-limit windows and pending webhooks."""
        self.ledger.reset()
        for behaviour in self.behaviours.values():
            behaviour.reset()
        self.webhooks.reset()

    def stats(self) -> dict[str, Any]:
        """The ledger's stats plus webhook counters and uptime."""
        return {
            **self.ledger.stats(),
            "webhooks": self.webhooks.stats(),
            "uptime_s": round(self.uptime_s(), 3),
        }
