"""Signed webhooks from the simulator back to the pipeline.

:func:`plan_for` turns one accepted message into the events a real provider
would send later (delivery receipt, reply, opt-out, HELP, bounce), each with a
delay drawn from ``webhooks.delay``. :class:`WebhookSender` holds them in a
bounded time-ordered queue and POSTs each one when due, signed with
:func:`providers.signing.sign`, from background tasks, so request handling
never waits for the pipeline. A failed POST (connection error, timeout, 408,
429 or 5xx) is retried with exponential backoff; any other 4xx (a rejected
signature, say) is final.

Payload::

    {"event_id": "evt_...", "kind": "delivery|reply|opt_out|bounce|help",
     "provider": "sim", "channel": "sms|voice|email",
     "provider_message_id": "sms_..." | null, "campaign_id": "...",
     "lead_id": "...", "body": "...", "status": "...",
     "occurred_at": "<ISO 8601, campaign clock>"}
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import aiohttp

from providers.signing import signed_headers
from simulator.behaviour import Clock, sample_latency_s
from simulator.config import WebhookConfig
from simulator.ledger import SentMessage

__all__ = [
    "HELP_WORDS",
    "KINDS",
    "OPT_OUT_WORDS",
    "REPLY_TEXTS",
    "DeliveryResult",
    "WebhookEvent",
    "WebhookSender",
    "new_event_id",
    "parse_clock",
    "plan_for",
]

log = logging.getLogger("leadflow.sim.webhooks")

#: Every webhook kind.
KINDS: Final = ("delivery", "reply", "opt_out", "bounce", "help")

#: The opt-out words carriers and the FCC honour, as people type them.
OPT_OUT_WORDS: Final = (
    "STOP",
    "Stop",
    "stop",
    " STOP ",
    "Stop.",
    "QUIT",
    "END",
    "REVOKE",
    "OPT OUT",
    "Opt out",
    "CANCEL",
    "UNSUBSCRIBE",
    "Unsubscribe",
    "STOPALL",
)

#: HELP keyword variants.
HELP_WORDS: Final = ("HELP", "Help", "help")

#: Ordinary replies; none of them is an opt-out.
REPLY_TEXTS: Final = (
    "Sounds interesting, can you email me more info?",
    "Not right now, maybe next quarter.",
    "Who is this?",
    "Yes, let's talk Tuesday.",
    "Call me tomorrow afternoon.",
    "We already use another vendor.",
    "What's the pricing?",
    "Interested. What times work for you?",
)

_VOICE_OUTCOMES: Final = (("completed", 60), ("no_answer", 25), ("voicemail", 15))
_VOICE_OPT_OUT: Final = "Caller asked to be removed from the list"
_BOUNCE_TEXT: Final = "550 5.1.1 The email account that you tried to reach does not exist"
_RETRYABLE: Final = frozenset({408, 425, 429})
_MAX_RETRY_AFTER_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One webhook to send."""

    event_id: str
    kind: str
    channel: str
    provider_message_id: str | None
    campaign_id: str
    lead_id: str
    body: str
    status: str
    occurred_at: str

    def to_json(self) -> dict[str, Any]:
        """The JSON payload."""
        return {
            "event_id": self.event_id,
            "kind": self.kind,
            "provider": "sim",
            "channel": self.channel,
            "provider_message_id": self.provider_message_id,
            "campaign_id": self.campaign_id,
            "lead_id": self.lead_id,
            "body": self.body,
            "status": self.status,
            "occurred_at": self.occurred_at,
        }

    def encode(self) -> bytes:
        """The exact bytes POSTed (and signed)."""
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How sending one webhook went."""

    event_id: str
    delivered: bool
    #: The pipeline's last HTTP status, or None if it never answered.
    status: int | None
    attempts: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As JSON-ready data."""
        return {
            "event_id": self.event_id,
            "delivered": self.delivered,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
        }


def new_event_id(rng: random.Random) -> str:
    """A fresh event id (reproducible under a fixed seed)."""
    return f"evt_{rng.getrandbits(80):020x}"


def parse_clock(value: str) -> datetime:
    """An ISO 8601 time (``Z`` allowed); naive times are taken as UTC. Raises ValueError."""
    parsed = datetime.fromisoformat(value.strip())
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def occurred_at(
    message: SentMessage | None, after_s: float, *, time_scale: float, wall: float
) -> str:
    """Campaign-clock time ``after_s`` wall seconds after ``message`` was accepted.

    Without a message or its clock header, the wall time ``wall`` + ``after_s``.
    """
    if message is not None and message.clock:
        try:
            base = parse_clock(message.clock)
        except ValueError:
            pass
        else:
            return _iso(base + timedelta(seconds=after_s * time_scale))
    return _iso(datetime.fromtimestamp(wall + after_s, UTC))


def plan_for(
    message: SentMessage, config: WebhookConfig, rng: random.Random, *, time_scale: float
) -> list[tuple[float, WebhookEvent]]:
    """The (delay seconds, event) pairs a provider would send about ``message``."""
    plans: list[tuple[float, WebhookEvent]] = []

    def event(kind: str, at_s: float, body: str, status: str) -> None:
        plans.append(
            (
                at_s,
                WebhookEvent(
                    event_id=new_event_id(rng),
                    kind=kind,
                    channel=message.channel,
                    provider_message_id=message.provider_message_id,
                    campaign_id=message.campaign_id,
                    lead_id=message.lead_id,
                    body=body,
                    status=status,
                    occurred_at=occurred_at(
                        message, at_s, time_scale=time_scale, wall=message.accepted_at
                    ),
                ),
            )
        )

    first = sample_latency_s(config.delay, rng)
    if message.channel == "email" and rng.random() < config.bounce_rate:
        event("bounce", first, _BOUNCE_TEXT, "bounced")
        return plans
    if rng.random() < config.delivery_rate:
        if message.channel == "voice":
            outcome = rng.choices(
                [o[0] for o in _VOICE_OUTCOMES], weights=[o[1] for o in _VOICE_OUTCOMES]
            )[0]
            event("delivery", first, "", outcome)
        else:
            event("delivery", first, "", "delivered")
    later = first + sample_latency_s(config.delay, rng)
    draw = rng.random()
    if message.channel == "voice":
        if draw < config.opt_out_rate:
            event("opt_out", later, _VOICE_OPT_OUT, "received")
        return plans
    if draw < config.opt_out_rate:
        event("opt_out", later, rng.choice(OPT_OUT_WORDS), "received")
    elif draw < config.opt_out_rate + config.reply_rate:
        event("reply", later, rng.choice(REPLY_TEXTS), "received")
    elif message.channel == "sms" and draw < config.opt_out_rate + config.reply_rate + (
        config.help_rate
    ):
        event("help", later, rng.choice(HELP_WORDS), "received")
    return plans


class WebhookSender:
    """Sends signed webhooks from background tasks through a bounded, time-ordered queue."""

    def __init__(
        self,
        config: WebhookConfig,
        rng: random.Random,
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self.config = config
        self.rng = rng
        self.clock = clock
        self.wall = wall
        self.counts: Counter[str] = Counter()
        self.delivered_by_kind: Counter[str] = Counter()
        self._heap: list[tuple[float, int, WebhookEvent, bool | None]] = []
        self._seq = 0
        self._ready: asyncio.Queue[tuple[WebhookEvent, bool | None]] = asyncio.Queue()
        self._wakeup = asyncio.Event()
        self._in_flight = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        """True when a pipeline URL is configured."""
        return bool(self.config.url)

    @property
    def pending(self) -> int:
        """Webhooks waiting or being sent."""
        return len(self._heap) + self._ready.qsize() + self._in_flight

    async def start(self) -> None:
        """Open the HTTP session and start the dispatcher and workers."""
        self._session = aiohttp.ClientSession()
        self._tasks.append(asyncio.create_task(self._dispatch(), name="sim-webhook-dispatch"))
        for i in range(self.config.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"sim-webhook-{i}"))

    async def close(self) -> None:
        """Stop the tasks (pending webhooks are dropped and counted) and close the session."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        abandoned = len(self._heap) + self._ready.qsize()
        if abandoned:
            self.counts["abandoned_at_shutdown"] += abandoned
            log.info("webhooks: %d pending webhooks abandoned at shutdown", abandoned)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def update(self, config: WebhookConfig) -> None:
        """Use ``config`` from now on (queue size and workers apply to new events only)."""
        self.config = config

    def reset(self) -> None:
        """Forget pending webhooks and counters."""
        self._heap.clear()
        while not self._ready.empty():
            self._ready.get_nowait()
            self._ready.task_done()
        self.counts.clear()
        self.delivered_by_kind.clear()

    def schedule(
        self, event: WebhookEvent, delay_s: float, *, bad_signature: bool | None = None
    ) -> bool:
        """Queue ``event`` to be sent in ``delay_s``; False (and counted) if the queue is full.

        ``bad_signature`` forces (True) or forbids (False) a wrong signature;
        None leaves it to ``bad_signature_rate``.
        """
        if not self.enabled:
            return False
        if self.pending >= self.config.queue_size:
            self.counts["dropped_queue_full"] += 1
            return False
        self._seq += 1
        heapq.heappush(
            self._heap, (self.clock() + max(0.0, delay_s), self._seq, event, bad_signature)
        )
        self.counts["scheduled"] += 1
        self._wakeup.set()
        return True

    async def idle(self, timeout_s: float = 10.0) -> None:
        """Wait until nothing is pending (for tests); TimeoutError after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            while self.pending:
                await asyncio.sleep(0.01)

    def stats(self) -> dict[str, Any]:
        """Counters: scheduled, delivered, rejected, failed, retries, dropped, pending."""
        keys = (
            "scheduled",
            "delivered",
            "rejected",
            "failed",
            "retries",
            "bad_signature_sent",
            "dropped_queue_full",
            "abandoned_at_shutdown",
        )
        return {
            "enabled": self.enabled,
            **{k: self.counts.get(k, 0) for k in keys},
            "pending": self.pending,
            "delivered_by_kind": dict(sorted(self.delivered_by_kind.items())),
        }

    async def _dispatch(self) -> None:
        while True:
            if not self._heap:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait = self._heap[0][0] - self.clock()
            if wait > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wakeup.wait()
                continue
            _, _, event, bad_signature = heapq.heappop(self._heap)
            self._ready.put_nowait((event, bad_signature))

    async def _work(self) -> None:
        while True:
            event, bad_signature = await self._ready.get()
            self._in_flight += 1
            try:
                await self.deliver(event, bad_signature=bad_signature)
            except Exception:  # never let one webhook kill a worker
                log.exception("webhooks: unexpected error sending event %s", event.event_id)
            finally:
                self._in_flight -= 1
                self._ready.task_done()

    async def deliver(
        self, event: WebhookEvent, *, bad_signature: bool | None = None
    ) -> DeliveryResult:
        """POST ``event`` now, retrying as configured; never raises for HTTP failures."""
        if self._session is None or not self.config.url:
            return DeliveryResult(event.event_id, False, None, 0, "webhooks are off")
        config = self.config
        if bad_signature is None:
            bad_signature = self.rng.random() < config.bad_signature_rate
        body = event.encode()
        secret = config.secret.encode()
        if bad_signature:
            secret = b"not-the-secret:" + secret
            self.counts["bad_signature_sent"] += 1
        status: int | None = None
        error: str | None = None
        for attempt in range(1, config.attempts + 1):
            retry_after: float | None = None
            headers = signed_headers(secret, int(self.wall()), body)
            try:
                async with self._session.post(
                    config.url,
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=config.timeout_s),
                ) as response:
                    status = response.status
                    await response.read()
                    if 200 <= status < 300:
                        self.counts["delivered"] += 1
                        self.delivered_by_kind[event.kind] += 1
                        return DeliveryResult(event.event_id, True, status, attempt)
                    error = f"HTTP {status}"
                    if status < 500 and status not in _RETRYABLE:
                        self.counts["rejected"] += 1
                        log.warning(
                            "webhooks: pipeline rejected event %s (%s) with HTTP %d",
                            event.event_id, event.kind, status,
                        )  # fmt: skip
                        return DeliveryResult(event.event_id, False, status, attempt, error)
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = type(exc).__name__
            if attempt < config.attempts:
                self.counts["retries"] += 1
                backoff = config.backoff_s * (2 ** (attempt - 1))
                await asyncio.sleep(max(backoff, retry_after or 0.0))
        self.counts["failed"] += 1
        log.warning(
            "webhooks: gave up on event %s (%s) after %d attempts: %s",
            event.event_id, event.kind, config.attempts, error,
        )  # fmt: skip
        return DeliveryResult(event.event_id, False, status, config.attempts, error)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:
        return None
