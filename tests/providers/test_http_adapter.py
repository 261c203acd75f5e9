"""The generic HTTP SMS/voice adapter: wire shape, answer parsing, error mapping, subclassing."""

from __future__ import annotations

import base64
import json
import urllib.parse
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from providers.base import Secret, SmsMessage, VoiceCall
from providers.errors import (
    AuthenticationError,
    BadResponseError,
    ClientError,
    GiveUpError,
    InvalidRecipientError,
    ProviderConfigError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
)
from providers.guard import Guard
from providers.http_adapter import (
    HttpSmsAdapter,
    HttpVoiceAdapter,
    ParsedSend,
    RequestSpec,
    parse_retry_after,
    validate_base_url,
)
from providers.idempotency import idempotency_key
from providers.retry import RetryPolicy
from providers.transport import HttpRequest, HttpResponse, MockTransport

SMS = SmsMessage(
    campaign_id="camp-1",
    lead_id="lead-1",
    touch=1,
    to="+14155552671",
    body="Hi there",
    clock=datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
)


def ok(body: Any = None, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    data = {"id": "msg-1", "status": "accepted", "cost_units": 1.0} if body is None else body
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return HttpResponse(status, headers or {}, raw)


def err(status: int, code: str, message: str = "nope", **headers: str) -> HttpResponse:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return HttpResponse(status, {k.lower().replace("_", "-"): v for k, v in headers.items()}, body)


def sms_adapter(transport: MockTransport, **guard_kwargs: Any) -> HttpSmsAdapter:
    guard_kwargs.setdefault("retry", RetryPolicy(attempts=1))
    return HttpSmsAdapter(
        name="sms-http",
        base_url="http://127.0.0.1:8099/",
        api_key=Secret("the-api-key"),
        guard=Guard("sms-http", **guard_kwargs),
        transport=transport,
        sender="+14155550100",
    )


async def test_sms_request_follows_the_contract() -> None:
    transport = MockTransport(lambda req: ok())
    result = await sms_adapter(transport).send_sms(SMS)
    (req,) = transport.requests
    assert (req.method, req.url) == ("POST", "http://127.0.0.1:8099/v1/sms")
    assert req.headers["Authorization"] == "Bearer the-api-key"
    assert req.headers["Idempotency-Key"] == idempotency_key("camp-1", "lead-1", 1)
    assert req.headers["X-Leadflow-Clock"] == "2026-01-05T09:30:00+00:00"
    assert req.headers["Content-Type"] == "application/json"
    assert json.loads(req.body) == {
        "to": "+14155552671",
        "from": "+14155550100",
        "body": "Hi there",
        "campaign_id": "camp-1",
        "lead_id": "lead-1",
        "touch": 1,
    }
    assert result.message_id == "msg-1"
    assert result.status == "accepted"
    assert result.idempotency_key == SMS.idempotency_key
    assert result.attempts == 1


async def test_voice_request_follows_the_contract() -> None:
    transport = MockTransport(lambda req: ok({"id": "call-1", "status": "queued", "cost_units": 3}))
    adapter = HttpVoiceAdapter(
        name="voice-http",
        base_url="http://sim",
        api_key="k",
        guard=Guard("voice-http"),
        transport=transport,
        sender="+14155550100",
    )
    call = VoiceCall(campaign_id="c", lead_id="l", touch=2, to="+14155552671", script="Hello")
    result = await adapter.start_call(call)
    (req,) = transport.requests
    assert req.url == "http://sim/v1/voice"
    assert json.loads(req.body)["script"] == "Hello"
    assert (result.status, result.cost_units) == ("queued", 3.0)


async def test_missing_cost_uses_the_default() -> None:
    transport = MockTransport(lambda req: ok({"id": "m", "status": "accepted"}))
    assert (await sms_adapter(transport).send_sms(SMS)).cost_units == 1.0


async def test_message_sender_overrides_the_default() -> None:
    transport = MockTransport(lambda req: ok())
    message = SmsMessage(
        campaign_id="c", lead_id="l", touch=1, to="+14155552671", body="x", sender="ACME"
    )
    await sms_adapter(transport).send_sms(message)
    assert json.loads(transport.requests[0].body)["from"] == "ACME"


@pytest.mark.parametrize(
    ("response", "words"),
    [
        (ok(b"<html>bad gateway</html>"), "not JSON"),
        (ok([1, 2]), "JSON list"),
        (ok({"status": "accepted"}), "no message id"),
        (ok({"id": "", "status": "accepted"}), "no message id"),
        (ok({"id": "m"}), "no status"),
        (ok({"error": {"code": "queue_full", "message": "x"}}), "error body"),
        (ok({"id": "m", "status": "failed"}), "status 'failed'"),
        (ok({"id": "m", "status": "accepted", "cost_units": "1"}), "cost_units"),
        (ok({"id": "m", "status": "accepted", "cost_units": -1}), "negative"),
        (ok({"id": "m"}, status=202), "no status"),
    ],
)
async def test_garbage_answers_are_bad_responses_without_retry(
    response: HttpResponse, words: str
) -> None:
    transport = MockTransport(lambda req: response)
    adapter = sms_adapter(transport, retry=RetryPolicy(attempts=3))
    with pytest.raises(BadResponseError) as info:
        await adapter.send_sms(SMS)
    assert words in str(info.value)
    assert info.value.provider == "sms-http"
    assert info.value.status == response.status
    assert len(transport.requests) == 1  # no retry of garbage


@pytest.mark.parametrize(
    ("response", "error_type"),
    [
        (err(400, "invalid_number"), InvalidRecipientError),
        (err(422, "landline"), InvalidRecipientError),
        (err(400, "invalid_request"), ClientError),
        (err(404, "not_found"), ClientError),
        (err(413, "batch_too_large"), ClientError),
        (HttpResponse(302, {"location": "http://x"}), ClientError),
        (err(401, "unauthorized"), AuthenticationError),
        (err(403, "forbidden"), AuthenticationError),
        (err(429, "rate_limited", Retry_After="3"), RateLimitedError),
        (err(500, "internal_error"), ServerError),
        (err(503, "service_unavailable", Retry_After="2"), ServerError),
        (HttpResponse(502, {}, b"<html>Bad Gateway</html>"), ServerError),
    ],
)
async def test_error_answers_map_to_typed_errors(response: HttpResponse, error_type: type) -> None:
    adapter = sms_adapter(MockTransport(lambda req: response))
    error = adapter.error_for(response)
    assert type(error) is error_type
    assert error.status == response.status
    assert error.provider == "sms-http"


async def test_408_is_a_retryable_timeout() -> None:
    adapter = sms_adapter(MockTransport(lambda req: err(408, "timeout")))
    assert isinstance(adapter.error_for(err(408, "timeout")), ProviderTimeoutError)


async def test_retry_after_header_is_read() -> None:
    adapter = sms_adapter(MockTransport(lambda req: ok()))
    error = adapter.error_for(err(429, "rate_limited", Retry_After="7"))
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 7.0


async def test_invalid_number_fails_at_once_and_leaks_no_number() -> None:
    transport = MockTransport(lambda req: err(400, "invalid_number", "+14155552671 is not valid"))
    adapter = sms_adapter(transport, retry=RetryPolicy(attempts=3))
    with pytest.raises(InvalidRecipientError) as info:
        await adapter.send_sms(SMS)
    assert len(transport.requests) == 1
    assert "4155552671" not in str(info.value)
    assert info.value.code == "invalid_number"


async def test_non_e164_recipient_is_refused_without_a_call() -> None:
    transport = MockTransport(lambda req: ok())
    message = SmsMessage(campaign_id="c", lead_id="l", touch=1, to="415-555-2671", body="x")
    with pytest.raises(InvalidRecipientError):
        await sms_adapter(transport).send_sms(message)
    assert transport.requests == []


async def test_key_is_the_same_on_every_retry() -> None:
    answers = iter([err(503, "service_unavailable"), err(500, "x"), ok()])
    transport = MockTransport(lambda req: next(answers))
    adapter = sms_adapter(transport, retry=RetryPolicy(attempts=3, base=0.0))
    result = await adapter.send_sms(SMS)
    keys = {req.headers["Idempotency-Key"] for req in transport.requests}
    assert len(transport.requests) == 3
    assert keys == {SMS.idempotency_key}
    assert result.attempts == 3


async def test_persistent_5xx_gives_up() -> None:
    transport = MockTransport(lambda req: err(500, "internal_error"))
    adapter = sms_adapter(transport, retry=RetryPolicy(attempts=3, base=0.0))
    with pytest.raises(GiveUpError) as info:
        await adapter.send_sms(SMS)
    assert info.value.attempts == 3
    assert isinstance(info.value.last_error, ServerError)


def test_adapter_repr_hides_the_key() -> None:
    adapter = sms_adapter(MockTransport(lambda req: ok()))
    assert "the-api-key" not in repr(adapter)
    assert "the-api-key" not in repr(vars(adapter))
    assert repr(Secret("x")) == "Secret('***')"
    assert f"{Secret('x')}" == "Secret('***')"
    assert "Hi there" not in repr(SMS) and "4155552671" not in repr(SMS)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        (" 10 ", 10.0),
        ("-4", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    value = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(value, now=now) == pytest.approx(90.0)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host",
        "127.0.0.1:8099",
        "http://",
        "http://user:pw@host",
        "http://host/?q=1",
        "http://host:99999",
    ],
)
def test_bad_base_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ProviderConfigError, match="LEADFLOW_SMS_URL"):
        validate_base_url(url, env="LEADFLOW_SMS_URL")


def test_good_base_url_is_normalised() -> None:
    assert (
        validate_base_url("https://api.example.com/base/", env="X")
        == "https://api.example.com/base"
    )


# --- a Twilio-style subclass (the example in docs/PROVIDERS.md) -------------------------


class TwilioStyleSms(HttpSmsAdapter):
    """Form-encoded body, HTTP Basic auth, ``sid``/``status``/``price`` in the answer."""

    def __init__(self, *, account_sid: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.account_sid = account_sid

    def auth_headers(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.account_sid}:{self.api_key.reveal()}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def build_request(self, message: SmsMessage) -> RequestSpec:
        self.check_recipient(message.to)
        return RequestSpec(
            f"/2010-04-01/Accounts/{self.account_sid}/Messages.json",
            {"To": message.to, "From": message.sender or self.sender, "Body": message.body},
            encoding="form",
        )

    def parse_response(self, message: SmsMessage, response: HttpResponse) -> ParsedSend:
        data = self.json_object(response)
        return ParsedSend(data["sid"], data["status"], abs(float(data.get("price") or 0)))


async def test_twilio_style_subclass_is_small_and_protected() -> None:
    def handler(req: HttpRequest) -> HttpResponse:
        return ok({"sid": "SM123", "status": "queued", "price": "-0.0079"}, status=201)

    transport = MockTransport(handler)
    adapter = TwilioStyleSms(
        account_sid="AC1",
        name="sms-twilio",
        base_url="https://api.twilio.example",
        api_key=Secret("token"),
        guard=Guard("sms-twilio"),
        transport=transport,
        sender="+14155550100",
    )
    result = await adapter.send_sms(SMS)
    (req,) = transport.requests
    assert req.url == "https://api.twilio.example/2010-04-01/Accounts/AC1/Messages.json"
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"AC1:token").decode()
    assert req.headers["Idempotency-Key"] == SMS.idempotency_key
    assert urllib.parse.parse_qs(req.body.decode())["To"] == ["+14155552671"]
    assert (result.message_id, result.status, result.cost_units) == ("SM123", "queued", 0.0079)


async def test_subclass_parse_errors_become_bad_responses() -> None:
    transport = MockTransport(lambda req: ok({"unexpected": True}, status=201))
    adapter = TwilioStyleSms(
        account_sid="AC1",
        name="sms-twilio",
        base_url="https://api.twilio.example",
        api_key="token",
        guard=Guard("sms-twilio"),
        transport=transport,
    )
    with pytest.raises(BadResponseError) as info:
        await adapter.send_sms(SMS)
    assert info.value.status == 201
    assert "KeyError" in str(info.value)
