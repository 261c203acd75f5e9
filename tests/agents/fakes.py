"""Fakes for the stage and webhook tests: state table, events, producer, SMS provider, seeds."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from agents.lead_states import table_key
from providers.base import SendResult, SmsMessage
from streams.campaign import load_campaign
from streams.codec import AvroCodec
from streams.settings import REPO_ROOT
from streams.state_machine import LeadState, State

_offsets = itertools.count()
_NOW = datetime(2026, 1, 5, 15, 30, tzinfo=UTC)


class FakeTable(dict[bytes, dict[str, Any]]):
    """Stands in for the Faust state table (LeadStates uses ``get`` and item assignment)."""

    def put(self, state: LeadState) -> None:
        self[table_key(state.campaign_id, state.lead_id)] = state.to_record()

    def state_of(self, lead_id: str) -> LeadState | None:
        for raw in self.values():
            if raw["lead_id"] == lead_id:
                return LeadState.from_record(raw)
        return None


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    acked: bool = False

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)

    def __hash__(self) -> int:
        return id(self)


class FakeConsumer:
    """The part of Faust's consumer an event set aside touches."""

    def __init__(self) -> None:
        self._unacked_messages: set[Any] = set()


class FakeApp:
    """The part of a Faust app an event knows."""

    def __init__(self) -> None:
        self.consumer = FakeConsumer()


class FakeEvent:
    """A Faust event: ``.message`` and ``.app`` (it must be weak-referenceable)."""

    def __init__(self, message: FakeMessage, app: FakeApp | None = None) -> None:
        self.message = message
        self.app = app or FakeApp()


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    headers: Any


class FakeProducer:
    """Records sends; ``fail`` makes the delivery future fail; ``on_send`` runs at each send."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.fail: BaseException | None = None
        self.on_send: Callable[[Sent], None] | None = None

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
    ) -> asyncio.Future[None]:
        record = Sent(topic, key, value, partition, headers)
        if self.on_send is not None:
            self.on_send(record)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            future.set_exception(self.fail)
        else:
            self.sent.append(record)
            future.set_result(None)
        return future

    def to(self, topic: str) -> list[Sent]:
        return [s for s in self.sent if s.topic == topic]


class FakeSms:
    """An SMS provider that records messages; ``error`` makes it raise instead."""

    name = "fake-sms"

    def __init__(self) -> None:
        self.messages: list[SmsMessage] = []
        self.error: BaseException | None = None

    async def send_sms(self, message: SmsMessage) -> SendResult:
        if self.error is not None:
            raise self.error
        self.messages.append(message)
        return SendResult(
            provider=self.name,
            message_id=f"sms_{len(self.messages)}",
            status="accepted",
            cost_units=1.0,
            idempotency_key=message.idempotency_key,
        )

    async def aclose(self) -> None:
        return None


class FakeProviders:
    def __init__(self) -> None:
        self.sms = FakeSms()

    async def aclose(self) -> None:
        return None


def inbound_record(**fields: Any) -> dict[str, Any]:
    """A ``leadflow.InboundEvent`` record (defaults: an SMS reply)."""
    record: dict[str, Any] = {
        "event_id": f"evt_{next(_offsets):08d}",
        "kind": "reply",
        "provider": "sim",
        "channel": "sms",
        "provider_message_id": "sms_1",
        "campaign_id": "c1",
        "lead_id": "l1",
        "body": "Who is this?",
        "status": "received",
        "received_at": _NOW,
    }
    record.update(fields)
    return record


def inbound_event(topic: str = "inbound", partition: int = 0, **fields: Any) -> FakeEvent:
    """A fake Faust event carrying an encoded InboundEvent."""
    record = inbound_record(**fields)
    value = AvroCodec("leadflow.InboundEvent", subject=topic).encode(record)
    key = (record["lead_id"] or record["event_id"]).encode()
    return FakeEvent(FakeMessage(topic, partition, next(_offsets), key, value))


def lead_state(
    campaign_id: str, lead_id: str, state: State = State.IN_SEQUENCE, touch: int = 1
) -> LeadState:
    return LeadState(campaign_id, lead_id, state, touch=touch, updated_at_ms=1, version=4)


# --- Postgres seeds (sync; the tests are small) ------------------------------------------


def seed_campaign(dsn: str, campaign_id: str) -> None:
    """Store the example campaign under ``campaign_id`` (a real, valid definition)."""
    campaign = replace(load_campaign(REPO_ROOT / "examples" / "campaign.yaml"), id=campaign_id)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO campaigns (campaign_id, name, config) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (campaign_id, campaign.name, Jsonb(campaign.to_dict())),
        )


def seed_lead(dsn: str, campaign_id: str, lead_id: str, identity_key: str | None) -> None:
    seed_campaign(dsn, campaign_id)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO leads (campaign_id, lead_id, state, touch, identity_key, version) "
            "VALUES (%s, %s, 'in_sequence', 1, %s, 4)",
            (campaign_id, lead_id, identity_key),
        )


def seed_touch(
    dsn: str,
    campaign_id: str,
    lead_id: str,
    *,
    touch: int = 1,
    channel: str = "sms",
    to_phone: str | None = "+15125550100",
) -> None:
    record = {
        "campaign_id": campaign_id,
        "lead_id": lead_id,
        "touch": touch,
        "channel": channel,
        "persona": "gianna",
        "template": "intro",
        "variant": None,
        "due_at": _NOW,
        "priority": 1000,
        "tier": "A",
        "attempt": 1,
        "event_time": _NOW,
        "to_phone": to_phone,
        "to_email": None,
        "first_name": "Ann",
        "last_name": None,
        "company": None,
        "title": None,
        "timezone": "America/Chicago",
        "state": "TX",
        "identity_key": None,
    }
    payload = AvroCodec("leadflow.TouchDue").encode(record)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO pending_touches (campaign_id, lead_id, touch, kafka_partition, channel, "
            "priority, due_at, payload, emitted_at) VALUES (%s, %s, %s, 0, %s, 1000, %s, %s, %s)",
            (campaign_id, lead_id, touch, channel, _NOW, payload, _NOW),
        )


def rows(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


def worker_web_app() -> Any:
    """A fresh aiohttp app with the worker web server's routes.

    Faust's own ``app.web.web_app`` binds to the first event loop that serves
    it, and each test has its own loop; a copy of its routes serves any loop.
    """
    from aiohttp import web

    from streams.app import app

    fresh = web.Application()
    for route in app.web.web_app.router.routes():  # type: ignore[attr-defined]
        if route.method == "HEAD":
            continue  # added again with its GET
        fresh.router.add_route(route.method, route.resource.canonical, route.handler)
    return fresh
