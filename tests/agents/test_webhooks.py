"""The webhook endpoint (agents/webhooks.py): signatures, dedup, opt-outs, publishing."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fakes import FakeProducer, Sent, rows, seed_lead, worker_web_app

from agents import webhooks
from agents.webhooks import (
    WebhookHandler,
    WebhookSettings,
    WebhookView,
    handle_webhook,
    parse_event,
)
from providers.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers
from simulator import run_simulator
from simulator.testing import ephemeral_config, fast_webhooks
from streams.app import app
from streams.codec import AvroCodec
from streams.errors import ConfigError, DatabaseUnavailableError
from streams.settings import load_from_env, settings_table

SECRET = b"webhook-secret-for-tests"
NOW = 1_767_225_600.0
CLOCK_MS = 1_767_300_000_000
TOPIC = "t-inbound"
CODEC = AvroCodec("leadflow.InboundEvent", subject=TOPIC)


def make_handler(dsn: str, **overrides: Any) -> WebhookHandler:
    options: dict[str, Any] = {
        "secrets": [SECRET],
        "dsn": dsn,
        "producer": FakeProducer(),
        "topic": TOPIC,
        "clock_ms": lambda: CLOCK_MS,
        "wall": lambda: NOW,
    }
    options.update(overrides)
    return WebhookHandler(**options)


@pytest.fixture
async def handler(dsn: str) -> AsyncIterator[WebhookHandler]:
    h = make_handler(dsn)
    yield h
    await h.aclose()


@pytest.fixture
def campaign() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def payload(campaign: str, lead: str | None = "l1", **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": f"evt_{uuid.uuid4().hex[:20]}",
        "kind": "delivery",
        "provider": "sim",
        "channel": "sms",
        "provider_message_id": "sms_3f9c",
        "campaign_id": campaign,
        "lead_id": lead,
        "body": "",
        "status": "delivered",
        "occurred_at": "2026-01-05T15:30:00.000Z",
    }
    data.update(fields)
    return data


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


async def post(
    h: WebhookHandler,
    data: dict[str, Any] | bytes,
    *,
    ts: float = NOW,
    provider: str = "sim",
    secret: bytes = SECRET,
) -> tuple[int, dict[str, Any]]:
    body = data if isinstance(data, bytes) else encode(data)
    return await h.handle(provider, signed_headers(secret, int(ts), body), body)


def published(h: WebhookHandler) -> list[Sent]:
    producer = h.producer
    assert isinstance(producer, FakeProducer)
    return producer.sent


def opt_out_rows(dsn: str, identity: str) -> list[tuple[Any, ...]]:
    return rows(
        dsn,
        "SELECT channel, source, campaign_id, lead_id FROM opt_outs WHERE identity_key = %s",
        identity,
    )


def event_rows(dsn: str, event_id: str) -> list[tuple[Any, ...]]:
    return rows(dsn, "SELECT kind FROM inbound_events WHERE event_id = %s", event_id)


# --- accepted events ------------------------------------------------------------------


async def test_a_signed_delivery_is_published_once_and_answered_200(
    handler: WebhookHandler, dsn: str, campaign: str
) -> None:
    data = payload(campaign)
    status, answer = await post(handler, data)
    assert (status, answer["status"], answer["kind"]) == (200, "accepted", "delivery")
    [sent] = published(handler)
    assert (sent.topic, sent.key) == (TOPIC, b"l1")
    record = CODEC.decode(sent.value)
    assert record["event_id"] == data["event_id"]
    assert record["provider"] == "sim"
    assert record["campaign_id"] == campaign
    assert record["status"] == "delivered"
    assert record["body"] is None  # an empty body is stored as null
    assert int(record["received_at"].timestamp() * 1000) == CLOCK_MS
    assert event_rows(dsn, data["event_id"]) == [("delivery",)]
    assert handler.counts["accepted:delivery"] == 1


async def test_an_opt_out_is_recorded_before_it_is_published_and_answered(
    handler: WebhookHandler, dsn: str, campaign: str
) -> None:
    identity = f"id-{uuid.uuid4().hex}"
    seed_lead(dsn, campaign, "l1", identity)
    at_publish: list[list[tuple[Any, ...]]] = []
    producer = handler.producer
    assert isinstance(producer, FakeProducer)
    producer.on_send = lambda _sent: at_publish.append(opt_out_rows(dsn, identity))
    status, answer = await post(handler, payload(campaign, kind="opt_out", body="Stop."))
    assert (status, answer["opt_out"], answer["status"]) == (200, "recorded", "accepted")
    assert at_publish == [[("all", "webhook:sim", campaign, "l1")]]
    assert opt_out_rows(dsn, identity) == [("all", "webhook:sim", campaign, "l1")]
    assert handler.counts["opt_out:recorded"] == 1


async def test_a_reply_that_reads_as_an_opt_out_is_recorded_as_one(
    handler: WebhookHandler, dsn: str, campaign: str
) -> None:
    identity = f"id-{uuid.uuid4().hex}"
    seed_lead(dsn, campaign, "l1", identity)
    data = payload(campaign, kind="reply", body="please remove me from your list")
    status, answer = await post(handler, data)
    assert (status, answer["kind"], answer["opt_out"]) == (200, "opt_out", "recorded")
    assert len(opt_out_rows(dsn, identity)) == 1
    # the provider's own kind is what goes on the topic; the stage classifies again
    assert CODEC.decode(published(handler)[0].value)["kind"] == "reply"
    assert event_rows(dsn, data["event_id"]) == [("opt_out",)]


async def test_an_opt_out_for_a_lead_with_no_identity_yet_is_still_published(
    handler: WebhookHandler, dsn: str, campaign: str
) -> None:
    status, answer = await post(handler, payload(campaign, "l-unknown", kind="opt_out"))
    assert (status, answer["opt_out"], answer["status"]) == (200, "unknown_lead", "accepted")
    assert [s.key for s in published(handler)] == [b"l-unknown"]
    assert rows(dsn, "SELECT 1 FROM opt_outs WHERE lead_id = 'l-unknown'") == []


async def test_an_event_without_a_lead_is_keyed_by_its_event_id(
    handler: WebhookHandler, campaign: str
) -> None:
    data = payload(campaign, None, kind="reply", body="Who is this?")
    status, _ = await post(handler, data)
    assert status == 200
    assert published(handler)[0].key == data["event_id"].encode()


async def test_header_names_are_case_insensitive(handler: WebhookHandler, campaign: str) -> None:
    body = encode(payload(campaign))
    headers = {k.lower(): v for k, v in signed_headers(SECRET, int(NOW), body).items()}
    status, _ = await handler.handle("sim", headers, body)
    assert status == 200


# --- rejected requests --------------------------------------------------------------


async def test_a_bad_signature_is_401_and_nothing_is_recorded_or_published(
    handler: WebhookHandler, dsn: str, campaign: str
) -> None:
    identity = f"id-{uuid.uuid4().hex}"
    seed_lead(dsn, campaign, "l1", identity)
    data = payload(campaign, kind="opt_out", body="STOP")
    status, answer = await post(handler, data, secret=b"someone-elses-secret!!")
    assert (status, answer["error"]["code"]) == (401, "bad_signature")
    assert published(handler) == []
    assert event_rows(dsn, data["event_id"]) == []
    assert opt_out_rows(dsn, identity) == []
    assert handler.counts["rejected:bad_signature"] == 1


async def test_a_body_changed_after_signing_is_401(handler: WebhookHandler, campaign: str) -> None:
    body = encode(payload(campaign))
    headers = signed_headers(SECRET, int(NOW), body)
    status, answer = await handler.handle("sim", headers, body.replace(b"sms", b"voice"))
    assert (status, answer["error"]["code"]) == (401, "bad_signature")
    assert published(handler) == []


async def test_missing_signature_headers_are_401(handler: WebhookHandler, campaign: str) -> None:
    body = encode(payload(campaign))
    status, answer = await handler.handle("sim", {"Content-Type": "application/json"}, body)
    assert (status, answer["error"]["code"]) == (401, "missing")
    headers = {TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: "sha256=00"}
    status, answer = await handler.handle("sim", headers, body)
    assert (status, answer["error"]["code"]) == (401, "malformed")
    assert published(handler) == []


async def test_a_stale_timestamp_is_401(handler: WebhookHandler, campaign: str) -> None:
    status, answer = await post(handler, payload(campaign), ts=NOW - 301)
    assert (status, answer["error"]["code"]) == (401, "stale_timestamp")
    assert published(handler) == []


async def test_a_replayed_request_is_401_and_published_once(
    handler: WebhookHandler, campaign: str
) -> None:
    body = encode(payload(campaign))
    headers = signed_headers(SECRET, int(NOW), body)
    first = await handler.handle("sim", headers, body)
    second = await handler.handle("sim", headers, body)
    assert first[0] == 200
    assert (second[0], second[1]["error"]["code"]) == (401, "replayed")
    assert len(published(handler)) == 1


async def test_a_retried_event_is_a_duplicate_and_not_published_again(
    handler: WebhookHandler, dsn: str, campaign: str
) -> None:
    data = payload(campaign, kind="reply", body="Interested")
    assert (await post(handler, data))[0] == 200
    status, answer = await post(handler, data, ts=NOW + 1)  # the provider's retry: fresh signature
    assert (status, answer["status"]) == (200, "duplicate")
    assert len(published(handler)) == 1
    assert event_rows(dsn, data["event_id"]) == [("reply",)]
    assert handler.counts["duplicate"] == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'["a list"]', "invalid_json"),
        (b'{"kind": "reply", "channel": "sms"}', "invalid_request"),
        (b'{"event_id": "e1", "kind": "", "channel": "sms"}', "invalid_request"),
        (b'{"event_id": "e1", "kind": "reply", "channel": 7}', "invalid_request"),
        (b'{"event_id": "e1", "kind": "reply", "channel": "sms", "lead_id": 5}', "invalid_request"),
    ],
)
async def test_a_signed_but_malformed_body_is_400(
    handler: WebhookHandler, dsn: str, body: bytes, code: str
) -> None:
    status, answer = await post(handler, body)
    assert (status, answer["error"]["code"]) == (400, code)
    assert published(handler) == []
    assert event_rows(dsn, "e1") == []


async def test_an_unknown_provider_path_is_404(handler: WebhookHandler, campaign: str) -> None:
    status, _ = await post(handler, payload(campaign), provider="../etc")
    assert status == 404
    assert published(handler) == []


async def test_no_secret_configured_is_503(dsn: str, campaign: str) -> None:
    h = make_handler(dsn, secrets=[])
    try:
        status, answer = await post(h, payload(campaign))
        assert (status, answer["error"]["code"]) == (503, "not_configured")
    finally:
        await h.aclose()


# --- failures -------------------------------------------------------------------------


async def test_a_failed_publish_is_503_and_the_retry_publishes(
    handler: WebhookHandler, dsn: str, campaign: str
) -> None:
    producer = handler.producer
    assert isinstance(producer, FakeProducer)
    producer.fail = RuntimeError("broker unreachable")
    data = payload(campaign, kind="reply", body="Call me")
    status, answer = await post(handler, data)
    assert (status, answer["error"]["code"]) == (503, "publish_failed")
    assert event_rows(dsn, data["event_id"]) == []  # the claim rolled back
    producer.fail = None
    status, answer = await post(handler, data, ts=NOW + 2)
    assert (status, answer["status"]) == (200, "accepted")
    assert len(producer.sent) == 1


async def test_postgres_down_is_503_without_a_traceback(campaign: str) -> None:
    h = make_handler("postgresql://leadflow@127.0.0.1:1/nowhere")
    try:
        status, answer = await post(h, payload(campaign))
    finally:
        await h.aclose()
    assert (status, answer["error"]["code"]) == (503, "database_unavailable")
    assert "Traceback" not in json.dumps(answer)
    assert published(h) == []


async def test_nothing_personal_is_logged(
    handler: WebhookHandler, dsn: str, campaign: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seed_lead(dsn, campaign, "l1", f"id-{uuid.uuid4().hex}")
    secret_text = "STOP texting +15125550199 zebra-secret"
    await post(handler, payload(campaign, kind="reply", body=secret_text))
    await post(handler, payload(campaign, kind="reply", body="hello zebra-secret"))
    await post(handler, b'{"zebra-secret": +15125550199')
    await post(handler, encode(payload(campaign, body="zebra-secret")), secret=b"x" * 20)
    assert caplog.records, "expected the handler to log something"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "zebra" not in text
    assert "5550199" not in text


# --- settings, parsing, the Faust view ---------------------------------------------------


def test_webhook_settings_read_the_shared_secret() -> None:
    good = load_from_env(WebhookSettings, {"LEADFLOW_WEBHOOK_SECRET": "x" * 16})
    assert good.secrets() == [b"x" * 16]
    assert "x" * 16 not in repr(good)
    assert settings_table(WebhookSettings)[0][0] == "LEADFLOW_WEBHOOK_SECRET"
    assert load_from_env(WebhookSettings, {}).secrets() == []
    with pytest.raises(ConfigError, match="at least 16"):
        load_from_env(WebhookSettings, {"LEADFLOW_WEBHOOK_SECRET": "short"}).secrets()


def test_parse_event_ignores_unknown_keys_and_takes_the_provider_from_the_url() -> None:
    body = encode({"event_id": " e1 ", "kind": "reply", "channel": "sms", "provider": "x", "n": 1})
    record = parse_event("twilio", body, received_at_ms=5)
    assert record["provider"] == "twilio"
    assert record["event_id"] == "e1"
    assert record["lead_id"] is None
    assert "n" not in record
    CODEC.encode(record)  # a valid leadflow.InboundEvent


def test_the_view_is_registered_on_the_worker_web_server() -> None:
    routes = {(r.method, r.resource.canonical) for r in app.web.web_app.router.routes()}
    assert ("POST", "/webhooks/{provider}") in routes


class FakeRequest:
    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.body = body
        self.headers = headers

    async def read(self) -> bytes:
        return self.body


async def test_the_view_answers_with_the_handler(
    handler: WebhookHandler, campaign: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "_default", handler)
    body = encode(payload(campaign))
    request = FakeRequest(body, signed_headers(SECRET, int(NOW), body))
    response = await WebhookView(app, app.web).post(request, provider="sim")
    assert response.status == 200
    assert json.loads(response.body)["status"] == "accepted"
    assert len(published(handler)) == 1


async def test_handle_webhook_is_503_while_the_handler_cannot_be_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken() -> WebhookHandler:
        raise DatabaseUnavailableError("webhooks: Postgres unavailable")

    monkeypatch.setattr(webhooks, "default_handler", broken)
    status, answer = await handle_webhook("sim", {}, b"{}")
    assert (status, answer["error"]["code"]) == (503, "database_unavailable")


async def test_the_simulators_webhooks_arrive_over_http_and_are_handled(
    dsn: str, campaign: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity = f"id-{uuid.uuid4().hex}"
    seed_lead(dsn, campaign, "l1", identity)
    handler = make_handler(dsn, wall=time.time)  # the simulator signs with the real time
    monkeypatch.setattr(webhooks, "_default", handler)
    runner = web.AppRunner(worker_web_app(), access_log=None)  # the worker's routes
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/sim"
        hooks = fast_webhooks(url, SECRET.decode(), delivery_rate=1.0, opt_out_rate=1.0)
        sms = {
            "to": "+13125550123",
            "from": "LEADFLOW",
            "body": "Hi",
            "campaign_id": campaign,
            "lead_id": "l1",
            "touch": 1,
        }
        async with (
            run_simulator(ephemeral_config(webhooks=hooks)) as sim,
            aiohttp.ClientSession() as session,
        ):
            auth = {"Authorization": "Bearer test"}
            async with session.post(f"{sim.http_url}/v1/sms", json=sms, headers=auth) as resp:
                assert resp.status == 200
            await sim.webhooks_idle()
            stats = sim.stats()["webhooks"]
    finally:
        await runner.cleanup()
        await handler.aclose()
    kinds = sorted(CODEC.decode(s.value)["kind"] for s in published(handler))
    assert kinds == ["delivery", "opt_out"]
    assert opt_out_rows(dsn, identity) == [("all", "webhook:sim", campaign, "l1")]
    assert handler.counts["accepted:opt_out"] == 1
    assert (stats["delivered"], stats["rejected"], stats["failed"]) == (2, 0, 0)
