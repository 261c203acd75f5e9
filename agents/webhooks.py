"""``POST /webhooks/<provider>`` on the worker's web server: signed provider events in.

The simulator (or a provider bridge) POSTs delivery receipts, replies,
opt-outs, HELPs and bounces (JSON, docs/PROVIDER-API.md). For each request
:meth:`WebhookHandler.handle`:

1. verifies the HMAC signature over the raw body (:func:`providers.signing.verify`,
   secret ``LEADFLOW_WEBHOOK_SECRET``, 300 s tolerance, a per-process
   :class:`~providers.signing.ReplayCache`): missing, malformed, stale, wrong
   or replayed -> **401** ``{"error": {"code": <reason>, ...}}``, counted,
   nothing recorded or published;
2. parses the JSON: not a JSON object, or a required field (``event_id``,
   ``kind``, ``channel``) missing or of the wrong type -> **400**;
3. if the event is an opt-out (:func:`streams.compliance.classify_event`: the
   provider said ``opt_out``, or a ``reply`` reads as one) **records it in
   ``opt_outs`` before answering**, keyed by the lead's hashed identity, so a
   touch already waiting in ``touch-due`` is refused by the send stage's
   re-check. A lead whose identity is not known yet is not recorded here; the
   event is still published and the inbound stage looks the identity up again
   (and dead-letters the opt-out if it still cannot);
4. claims ``event_id`` in ``inbound_events`` and publishes the
   ``leadflow.InboundEvent`` to ``inbound`` (key: the lead id, else the event
   id) and waits for the broker's ack, all inside one transaction: a repeat of
   an event already published answers **200** ``{"status": "duplicate"}`` and
   is not published again; a failed publish rolls the claim back and answers
   **503**, so the provider's retry publishes it;
5. answers **200** ``{"status": "accepted", ...}``.

Postgres unavailable -> **503** (providers retry 5xx). Nothing is ever
answered with a traceback, and nothing personal is logged: only the provider,
kind, event, campaign and lead ids, never the body.

The replay cache is per process: with several workers a replayed request can
pass the signature check on another worker; ``inbound_events`` then stops it
from being published twice.

``handle_webhook(provider, headers, body)`` is the same logic on the worker's
default handler, for callers that are not the Faust view.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import faust

from agents.inbound import OptOut, lookup_identities, record_opt_outs
from providers.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayCache,
    WebhookSignatureError,
    verify,
)
from sinks.db import StageDatabase
from streams.app import app
from streams.clock import shared_clock
from streams.codec import AvroCodec
from streams.compliance import ReplyKind, classify_event
from streams.errors import ConfigError, DatabaseError, LeadflowError, TransientError
from streams.settings import get_settings, load_from_env, setting
from streams.topics import by_name

__all__ = [
    "MIN_SECRET_LENGTH",
    "InvalidWebhookError",
    "PublishError",
    "WebhookHandler",
    "WebhookSettings",
    "WebhookView",
    "default_handler",
    "handle_webhook",
    "parse_event",
]

log = logging.getLogger(__name__)

#: The shortest secret accepted (docs/PROVIDER-API.md).
MIN_SECRET_LENGTH: Final = 16
_PROVIDER = re.compile(r"[A-Za-z0-9_-]{1,40}")
_MAX_ID = 200
_OPTIONAL = ("provider_message_id", "campaign_id", "lead_id", "body", "status")

Response = tuple[int, dict[str, Any]]

_SECRET_SETTING = setting(
    "", "LEADFLOW_WEBHOOK_SECRET", "Shared HMAC secret that signs provider webhooks."
)


@dataclass(frozen=True)
class WebhookSettings:
    """The webhook endpoint's settings (the same variable the simulator signs with)."""

    #: ``setting()``'s field, kept out of ``repr`` so the secret never reaches a log.
    webhook_secret: str = field(default="", repr=False, metadata=_SECRET_SETTING.metadata)

    def secrets(self) -> list[bytes]:
        """The secrets to verify with (empty: not configured). Raises ConfigError if too short."""
        if not self.webhook_secret:
            return []
        if len(self.webhook_secret) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"LEADFLOW_WEBHOOK_SECRET must be at least {MIN_SECRET_LENGTH} characters"
            )
        return [self.webhook_secret.encode()]


class InvalidWebhookError(LeadflowError):
    """A signed webhook whose body is not the event JSON the contract describes (400)."""

    reason = "invalid_request"

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(detail)


class PublishError(TransientError):
    """The event could not be published to ``inbound`` (503: the provider retries)."""

    reason = "publish_failed"


def parse_event(provider: str, body: bytes, *, received_at_ms: int) -> dict[str, Any]:
    """The ``leadflow.InboundEvent`` record for webhook JSON ``body``, or InvalidWebhookError.

    Unknown keys are ignored (the contract may add some); ``provider`` comes
    from the URL, not the body.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidWebhookError("invalid_json", "body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidWebhookError("invalid_json", "body is not a JSON object")
    record: dict[str, Any] = {"provider": provider, "received_at": received_at_ms}
    for name in ("event_id", "kind", "channel"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidWebhookError("invalid_request", f"{name} must be a non-empty string")
        record[name] = value.strip()
    for name in _OPTIONAL:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidWebhookError("invalid_request", f"{name} must be a string or null")
        record[name] = value or None
    for name in ("event_id", "campaign_id", "lead_id"):
        if record[name] is not None and len(record[name]) > _MAX_ID:
            raise InvalidWebhookError("invalid_request", f"{name} is longer than {_MAX_ID}")
    return record


class _Pool:
    """A few Postgres connections, so concurrent requests never share a transaction."""

    def __init__(self, dsn: str, name: str, size: int) -> None:
        self._all = [StageDatabase(dsn, f"{name}-{i}") for i in range(size)]
        self._free: asyncio.Queue[StageDatabase] | None = None

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[StageDatabase]:
        if self._free is None:
            self._free = asyncio.Queue()
            for db in self._all:
                self._free.put_nowait(db)
        db = await self._free.get()
        try:
            yield db
        finally:
            self._free.put_nowait(db)

    async def aclose(self) -> None:
        for db in self._all:
            await db.aclose()


def _error(status: int, code: str, message: str) -> Response:
    return status, {"error": {"code": code, "message": message}}


class WebhookHandler:
    """Verifies, records and publishes webhook events (see the module docstring).

    ``producer`` is Faust's producer (``send(topic, key, value, partition,
    timestamp, headers)`` returning a delivery future). ``clock_ms`` gives the
    campaign-clock time stamped as ``received_at``; ``wall`` is the unix time
    the signature timestamp is checked against.
    """

    def __init__(
        self,
        *,
        secrets: Sequence[bytes],
        dsn: str,
        producer: Any,
        topic: str,
        clock_ms: Callable[[], int] | None = None,
        wall: Callable[[], float] = time.time,
        tolerance_s: float = 300.0,
        replay_cache: ReplayCache | None = None,
        pool_size: int = 4,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self.secrets = list(secrets)
        self.producer = producer
        self.topic = topic
        self.wall = wall
        self.clock_ms = clock_ms or (lambda: int(self.wall() * 1000))
        self.tolerance_s = tolerance_s
        self.seen = replay_cache if replay_cache is not None else ReplayCache()
        self.publish_timeout_s = publish_timeout_s
        self.codec = AvroCodec("leadflow.InboundEvent", subject=topic)
        self._pool = _Pool(dsn, "webhooks", pool_size)
        #: Outcomes by label (accepted:<kind>, duplicate, rejected:<reason>, ...).
        self.counts: Counter[str] = Counter()

    async def handle(self, provider: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one webhook POST: ``(HTTP status, JSON body)``."""
        if not _PROVIDER.fullmatch(provider):
            self.counts["rejected:provider"] += 1
            return _error(404, "not_found", "unknown webhook path")
        if not self.secrets:
            self.counts["rejected:not_configured"] += 1
            return _error(503, "not_configured", "LEADFLOW_WEBHOOK_SECRET is not set")
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            verify(
                self.secrets,
                lowered.get(TIMESTAMP_HEADER.lower()),
                lowered.get(SIGNATURE_HEADER.lower()),
                body,
                now=self.wall(),
                tolerance_s=self.tolerance_s,
                seen=self.seen,
            )
        except WebhookSignatureError as exc:
            self.counts[f"rejected:{exc.reason}"] += 1
            log.warning("webhook from %s rejected: %s", provider, exc.reason)
            return _error(401, exc.reason, str(exc))
        try:
            record = parse_event(provider, body, received_at_ms=self.clock_ms())
        except InvalidWebhookError as exc:
            self.counts[f"invalid:{exc.code}"] += 1
            log.warning("webhook from %s invalid: %s", provider, exc)
            return _error(400, exc.code, str(exc))
        kind = classify_event(record["kind"], record["body"])
        try:
            return await self._record_and_publish(record, kind)
        except TransientError as exc:
            self.counts[f"error:{exc.reason}"] += 1
            log.warning("webhook %s: %s", record["event_id"], exc.reason)
            return _error(503, exc.reason, "try again later")
        except DatabaseError as exc:
            self.counts[f"error:{exc.reason}"] += 1
            log.error("webhook %s: database error (%s)", record["event_id"], exc.reason)
            return _error(500, exc.reason, "could not record the event")
        except Exception as exc:  # never a traceback to the provider
            self.counts["error:internal"] += 1
            log.error("webhook %s: %s", record["event_id"], type(exc).__name__)
            return _error(500, "internal_error", "could not handle the event")

    async def _record_and_publish(self, record: dict[str, Any], kind: str) -> Response:
        answer: dict[str, Any] = {"event_id": record["event_id"], "kind": kind}
        async with self._pool.acquire() as db:
            if kind == ReplyKind.OPT_OUT:
                answer["opt_out"] = await self._record_opt_out(db, record)
            async with db.transaction() as conn:
                cur = await conn.execute(
                    """
                    INSERT INTO inbound_events (event_id, kind, campaign_id, lead_id)
                    VALUES (%s, %s, %s, %s)
                    ON CONFLICT DO NOTHING
                    RETURNING event_id
                    """,
                    (record["event_id"], kind, record["campaign_id"], record["lead_id"]),
                )
                if await cur.fetchone() is None:
                    self.counts["duplicate"] += 1
                    log.info("webhook %s: duplicate, not published again", record["event_id"])
                    return 200, {**answer, "status": "duplicate"}
                await self._publish(record)
        self.counts[f"accepted:{kind}"] += 1
        log.debug(
            "webhook %s accepted: %s from %s (campaign %s, lead %s)",
            record["event_id"],
            kind,
            record["provider"],
            record["campaign_id"],
            record["lead_id"],
        )
        return 200, {**answer, "status": "accepted"}

    async def _record_opt_out(self, db: StageDatabase, record: dict[str, Any]) -> str:
        campaign_id, lead_id = record["campaign_id"], record["lead_id"]
        if not campaign_id or not lead_id:
            self.counts["opt_out:unknown_lead"] += 1
            log.warning("webhook %s: opt-out without a lead id", record["event_id"])
            return "unknown_lead"
        async with db.transaction() as conn:
            identities = await lookup_identities(conn, [(campaign_id, lead_id)])
            identity = identities.get((campaign_id, lead_id))
            if identity is not None:
                source = f"webhook:{record['provider']}"
                await record_opt_outs(conn, [OptOut(identity, source, campaign_id, lead_id)])
        if identity is None:
            self.counts["opt_out:unknown_lead"] += 1
            log.warning(
                "webhook %s: opt-out for campaign %s lead %s with no identity yet",
                record["event_id"],
                campaign_id,
                lead_id,
            )
            return "unknown_lead"
        self.counts["opt_out:recorded"] += 1
        log.info(
            "webhook %s: opt-out recorded (campaign %s, lead %s, channel %s)",
            record["event_id"],
            campaign_id,
            lead_id,
            record["channel"],
        )
        return "recorded"

    async def _publish(self, record: dict[str, Any]) -> None:
        value = self.codec.encode(record)
        key = (record["lead_id"] or record["event_id"]).encode()

        async def send() -> None:
            future = await self.producer.send(self.topic, key, value, None, None, None)
            await future

        try:
            await asyncio.wait_for(send(), self.publish_timeout_s)
        except Exception as exc:
            raise PublishError(f"publishing to {self.topic} failed: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Close the Postgres connections."""
        await self._pool.aclose()


_default: WebhookHandler | None = None
_default_lock = asyncio.Lock()


async def default_handler() -> WebhookHandler:
    """The worker's handler, built on first use (settings, campaign clock, Faust's producer)."""
    global _default
    async with _default_lock:
        if _default is None:
            settings = get_settings()
            try:
                secrets = load_from_env(WebhookSettings).secrets()
            except ConfigError as exc:
                log.error("webhooks disabled: %s", exc)
                secrets = []
            if not secrets:
                log.warning("LEADFLOW_WEBHOOK_SECRET is not set: every webhook answers 503")
            clock = await asyncio.to_thread(
                shared_clock, settings.worker_dsn, settings.time_scale, settings.clock_start
            )
            _default = WebhookHandler(
                secrets=secrets,
                dsn=settings.worker_dsn,
                producer=app.producer,
                topic=by_name("inbound").full_name(settings),
                clock_ms=clock.now_ms,
            )
        return _default


async def handle_webhook(provider: str, headers: Mapping[str, str], body: bytes) -> Response:
    """Answer one webhook with the worker's default handler: ``(status, JSON body)``."""
    try:
        handler = await default_handler()
    except LeadflowError as exc:  # Postgres down while reading the clock anchor
        log.warning("webhooks not ready: %s", exc.reason)
        return _error(503, exc.reason, "webhooks are not ready, try again later")
    return await handler.handle(provider, headers, body)


@app.page("/webhooks/{provider}")
class WebhookView(faust.web.View):
    """The Faust view: reads the raw body and answers with :func:`handle_webhook`."""

    async def post(self, request: Any, provider: str) -> Any:
        """``POST /webhooks/<provider>``."""
        body = await request.read()
        status, payload = await handle_webhook(provider, request.headers, body)
        return self.json(payload, status=status)
