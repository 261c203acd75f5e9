"""The simulator's HTTP API: provider endpoints and the ``/_sim`` control API.

Provider endpoints (``Authorization: Bearer <key>`` required)::

    POST /v1/sms               SMS send
    POST /v1/voice             voice call
    POST /v1/enrich            batch enrichment
    POST /v1/chat/completions  OpenAI-compatible text generation

Control API (no auth; the simulator binds to loopback by default)::

    GET  /_sim/health            GET  /_sim/messages?channel=&campaign_id=&lead_id=
    GET  /_sim/stats             POST /_sim/reset
    GET  /_sim/config            POST /_sim/config
    POST /_sim/webhooks/trigger

Every non-2xx answer has the body ``{"error": {"code": ..., "message": ...}}``;
429 and 503 carry ``Retry-After`` (whole seconds).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import phonenumbers
from aiohttp import web

from simulator.behaviour import Decision, Outcome
from simulator.config import config_to_mapping
from simulator.enrichment_data import enrich_lead
from simulator.ledger import SentMessage
from simulator.state import SimState
from simulator.webhooks import (
    HELP_WORDS,
    KINDS,
    REPLY_TEXTS,
    WebhookEvent,
    new_event_id,
    occurred_at,
    parse_clock,
)
from streams.errors import ConfigError

__all__ = [
    "CLOCK_HEADER",
    "IDEMPOTENCY_HEADER",
    "STATE_KEY",
    "SimHTTPError",
    "error_response",
    "is_e164",
    "make_app",
]

log = logging.getLogger("leadflow.sim.http")

#: Campaign-clock time of the request (ISO 8601).
CLOCK_HEADER: Final = "X-Leadflow-Clock"
#: Optional idempotency key, recorded with the message.
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
#: Where the app keeps its :class:`SimState`.
STATE_KEY: Final = web.AppKey("sim_state", SimState)

_E164: Final = re.compile(r"^\+[1-9]\d{6,14}$")
_SMS_MAX_CHARS: Final = 1600
_VOICE_MAX_CHARS: Final = 10_000
_CHANNELS: Final = ("sms", "voice", "email")
_STATUS_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


class SimHTTPError(Exception):
    """Raised inside a handler to answer with a JSON error body."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s


def error_response(
    status: int, code: str, message: str, *, retry_after_s: int | None = None
) -> web.Response:
    """The contract's error body ``{"error": {"code", "message"}}``."""
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def is_e164(number: str) -> bool:
    """True for a ``+E.164`` number that phonenumbers also finds valid."""
    if not _E164.match(number):
        return False
    try:
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(number, None)))
    except phonenumbers.NumberParseException:
        return False


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except SimHTTPError as exc:
        return error_response(exc.status, exc.code, exc.message, retry_after_s=exc.retry_after_s)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, f"http_{exc.status}")
        return error_response(exc.status, code, exc.reason)


# --- request parsing -----------------------------------------------------------


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise SimHTTPError(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise SimHTTPError(400, "invalid_json", "the body must be a JSON object")
    return data


def _string(data: Mapping[str, Any], field: str, *, max_len: int | None = None) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value.strip():
        raise SimHTTPError(400, "invalid_request", f"{field} must be a non-empty string")
    if max_len is not None and len(value) > max_len:
        raise SimHTTPError(
            400, f"{field}_too_long", f"{field} is {len(value)} characters; at most {max_len}"
        )
    return value


def _touch(data: Mapping[str, Any]) -> int:
    value = data.get("touch")
    # Touch 0 is a compliance message (an opt-out confirmation), not a sequence step.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SimHTTPError(400, "invalid_request", "touch must be an integer >= 0")
    return value


def _clock_header(request: web.Request) -> str | None:
    value = request.headers.get(CLOCK_HEADER)
    if value is None or value == "":
        return None
    try:
        parse_clock(value)
    except ValueError:
        raise SimHTTPError(
            400, "invalid_clock", f"{CLOCK_HEADER} is not an ISO 8601 time"
        ) from None
    return value


def _check_auth(request: web.Request, state: SimState) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise SimHTTPError(401, "unauthorized", "missing bearer API key")
    expected = state.config.api_key
    if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
        raise SimHTTPError(401, "unauthorized", "invalid API key")


# --- the behaviour gate --------------------------------------------------------


async def _admit(request: web.Request, state: SimState, endpoint: str) -> Decision:
    """Auth, outage and rate limit: raise the error answer or return the decision."""
    try:
        _check_auth(request, state)
    except SimHTTPError:
        state.ledger.count(endpoint, "unauthorized")
        raise
    decision = state.behaviours[endpoint].decide()
    if decision.outcome is Outcome.OUTAGE:
        state.ledger.count(endpoint, "outage")
        raise SimHTTPError(
            503, "service_unavailable", f"{endpoint} is in a simulated outage",
            retry_after_s=decision.retry_after_s,
        )  # fmt: skip
    if decision.outcome is Outcome.RATE_LIMITED:
        state.ledger.count(endpoint, "rate_limited")
        limit = state.config.endpoint(endpoint).rate_limit
        allowed = f"{limit.limit} requests per {limit.per_s:g} s" if limit else "no more now"
        raise SimHTTPError(
            429, "rate_limited", f"{endpoint} allows {allowed}",
            retry_after_s=decision.retry_after_s,
        )  # fmt: skip
    return decision


async def _after_latency(state: SimState, endpoint: str, decision: Decision) -> None:
    """Sleep the drawn latency, then answer an injected error or hang for a timeout."""
    await state.hang(decision.latency_s)
    if decision.outcome is Outcome.ERROR:
        state.ledger.count(endpoint, "error")
        raise SimHTTPError(500, "internal_error", f"simulated {endpoint} failure")
    if decision.outcome is Outcome.TIMEOUT:
        state.ledger.count(endpoint, "timeout")
        await state.hang(state.config.endpoint(endpoint).timeout_s)
        raise SimHTTPError(504, "timeout", f"simulated {endpoint} timeout")


def _drop_connection(request: web.Request) -> web.Response:
    """Close the connection so the client never sees the (already recorded) answer."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=200)


async def _send_message(
    request: web.Request,
    *,
    channel: str,
    text_field: str,
    max_chars: int,
    status: str,
    cost_units: float,
) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    decision = await _admit(request, state, channel)
    try:
        data = await _json_object(request)
        to = _string(data, "to")
        if not is_e164(to):
            raise SimHTTPError(400, "invalid_number", "to is not a valid E.164 phone number")
        _string(data, "from")
        _string(data, text_field, max_len=max_chars)
        campaign_id = _string(data, "campaign_id")
        lead_id = _string(data, "lead_id")
        touch = _touch(data)
        clock = _clock_header(request)
    except SimHTTPError:
        state.ledger.count(channel, "invalid")
        raise
    await _after_latency(state, channel, decision)
    key = request.headers.get(IDEMPOTENCY_HEADER) or None
    if key and state.config.dedupe_idempotency_keys:
        first = state.ledger.first_with_key(key)
        if first is not None and first.channel == channel:
            state.ledger.count(channel, "idempotent_replay")
            return web.json_response(_accepted(first, status, cost_units))
    message = state.accept(
        channel=channel,
        campaign_id=campaign_id,
        lead_id=lead_id,
        touch=touch,
        recipient=to,
        idempotency_key=key,
        clock=clock,
        response_lost=decision.outcome is Outcome.DROP,
    )
    if decision.outcome is Outcome.DROP:
        return _drop_connection(request)
    return web.json_response(_accepted(message, status, cost_units))


def _accepted(message: SentMessage, status: str, cost_units: float) -> dict[str, Any]:
    return {"id": message.provider_message_id, "status": status, "cost_units": cost_units}


# --- provider endpoints --------------------------------------------------------


async def sms(request: web.Request) -> web.StreamResponse:
    """``POST /v1/sms``."""
    return await _send_message(
        request,
        channel="sms",
        text_field="body",
        max_chars=_SMS_MAX_CHARS,
        status="accepted",
        cost_units=1.0,
    )


async def voice(request: web.Request) -> web.StreamResponse:
    """``POST /v1/voice``."""
    return await _send_message(
        request,
        channel="voice",
        text_field="script",
        max_chars=_VOICE_MAX_CHARS,
        status="queued",
        cost_units=3.0,
    )


async def enrich(request: web.Request) -> web.StreamResponse:
    """``POST /v1/enrich``: up to ``enrich_max_batch`` leads per call."""
    state = request.app[STATE_KEY]
    decision = await _admit(request, state, "enrich")
    try:
        data = await _json_object(request)
        leads = data.get("leads")
        if not isinstance(leads, list) or not leads:
            raise SimHTTPError(400, "invalid_request", "leads must be a non-empty list")
        limit = state.config.enrich_max_batch
        if len(leads) > limit:
            raise SimHTTPError(
                413, "batch_too_large", f"{len(leads)} leads in one batch; at most {limit}"
            )
        for i, lead in enumerate(leads):
            if not isinstance(lead, dict):
                raise SimHTTPError(400, "invalid_request", f"leads[{i}] must be an object")
            _string(lead, "key")
    except SimHTTPError:
        state.ledger.count("enrich", "invalid")
        raise
    await _after_latency(state, "enrich", decision)
    results = [enrich_lead(lead) for lead in leads]
    state.ledger.record_enrich_keys([str(lead["key"]) for lead in leads])
    state.ledger.count("enrich", "dropped" if decision.outcome is Outcome.DROP else "accepted")
    if decision.outcome is Outcome.DROP:
        return _drop_connection(request)
    return web.json_response({"results": results, "cost_units": len(leads) * 0.5})


_OPENERS: Final = (
    "Quick follow-up on my last note.",
    "Circling back on this.",
    "Following up in case this got buried.",
    "One more thought on my earlier message.",
    "Wanted to bump this up your inbox.",
)
_VALUES: Final = (
    "Teams like yours cut manual outreach time by about a third with us.",
    "We help revenue teams reach the right leads first.",
    "Most customers see replies within the first week.",
    "It takes about 15 minutes to set up.",
    "We can share a short case study from your industry.",
)
_CTAS: Final = (
    "Worth a 15-minute call this week?",
    "Would Thursday or Friday work for a quick chat?",
    "Open to a short demo?",
    "Should I send over a few times?",
    "Is this a priority for you this quarter?",
)


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``: an OpenAI-shaped, deterministic follow-up text."""
    state = request.app[STATE_KEY]
    decision = await _admit(request, state, "llm")
    try:
        data = await _json_object(request)
        model = _string(data, "model")
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise SimHTTPError(400, "invalid_request", "messages must be a non-empty list")
        for i, message in enumerate(messages):
            if (
                not isinstance(message, dict)
                or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content"), str)
            ):
                raise SimHTTPError(
                    400, "invalid_request", f"messages[{i}] needs string role and content"
                )
        max_tokens = data.get("max_tokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise SimHTTPError(400, "invalid_request", "max_tokens must be an integer >= 1")
    except SimHTTPError:
        state.ledger.count("llm", "invalid")
        raise
    await _after_latency(state, "llm", decision)
    digest = hashlib.sha256(
        json.dumps([model, messages], sort_keys=True, separators=(",", ":")).encode()
    ).digest()
    text = " ".join(
        (
            _OPENERS[digest[0] % len(_OPENERS)],
            _VALUES[digest[1] % len(_VALUES)],
            _CTAS[digest[2] % len(_CTAS)],
        )
    )
    finish = "stop"
    if max_tokens is not None and _tokens(text) > max_tokens:
        text = text[: max_tokens * 4]
        finish = "length"
    prompt_tokens = sum(_tokens(m["content"]) + 4 for m in messages)
    completion_tokens = _tokens(text)
    state.ledger.tokens["prompt"] += prompt_tokens
    state.ledger.tokens["completion"] += completion_tokens
    state.ledger.count("llm", "dropped" if decision.outcome is Outcome.DROP else "accepted")
    if decision.outcome is Outcome.DROP:
        return _drop_connection(request)
    return web.json_response(
        {
            "id": f"chatcmpl-{digest.hex()[:24]}",
            "object": "chat.completion",
            "created": int(state.wall()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


# --- control API ---------------------------------------------------------------


async def health(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/health``."""
    state = request.app[STATE_KEY]
    return web.json_response(
        {
            "status": "ok",
            "uptime_s": round(state.uptime_s(), 3),
            "http_url": state.http_url,
            "smtp": {"host": state.smtp_host, "port": state.smtp_port},
            "webhooks": state.webhooks.enabled,
        }
    )


async def list_messages(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/messages?channel=&campaign_id=&lead_id=&idempotency_key=``."""
    state = request.app[STATE_KEY]
    query = request.query
    channel = query.get("channel") or None
    if channel is not None and channel not in _CHANNELS:
        raise SimHTTPError(400, "invalid_request", f"channel must be one of {', '.join(_CHANNELS)}")
    messages = state.ledger.query(
        channel=channel,
        campaign_id=query.get("campaign_id") or None,
        lead_id=query.get("lead_id") or None,
        idempotency_key=query.get("idempotency_key") or None,
    )
    return web.json_response({"count": len(messages), "messages": [m.to_json() for m in messages]})


async def stats(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/stats``."""
    return web.json_response(request.app[STATE_KEY].stats())


async def reset(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/reset``: forget messages, counters, rate windows, pending webhooks."""
    request.app[STATE_KEY].reset()
    return web.json_response({"status": "reset"})


async def get_config(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/config``: the live config, secrets masked."""
    return web.json_response(config_to_mapping(request.app[STATE_KEY].config))


async def post_config(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/config``: merge a partial config (same shape as the file)."""
    state = request.app[STATE_KEY]
    data = await _json_object(request)
    try:
        config = state.update_config(data)
    except ConfigError as exc:
        raise SimHTTPError(400, "invalid_config", str(exc)) from None
    log.info("config changed at run time: %s", ", ".join(sorted(data)) or "nothing")
    return web.json_response(config_to_mapping(config))


_DEFAULT_TEXT: Final = {
    "reply": REPLY_TEXTS[0],
    "opt_out": "STOP",
    "help": HELP_WORDS[0],
    "bounce": "550 5.1.1 The email account that you tried to reach does not exist",
    "delivery": "",
}
_DEFAULT_STATUS: Final = {
    "reply": "received",
    "opt_out": "received",
    "help": "received",
    "bounce": "bounced",
    "delivery": "delivered",
}


async def trigger_webhook(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/webhooks/trigger``: send one webhook about a lead now.

    Body: ``kind``, ``campaign_id``, ``lead_id`` and optionally ``body``,
    ``channel``, ``status``, ``provider_message_id``, ``occurred_at``,
    ``bad_signature`` (bool) and ``wait`` (bool: deliver before answering and
    report the pipeline's answer).
    """
    state = request.app[STATE_KEY]
    data = await _json_object(request)
    kind = data.get("kind")
    if kind not in KINDS:
        raise SimHTTPError(400, "invalid_request", f"kind must be one of {', '.join(KINDS)}")
    campaign_id = _string(data, "campaign_id")
    lead_id = _string(data, "lead_id")
    channel = data.get("channel")
    if channel is not None and channel not in _CHANNELS:
        raise SimHTTPError(400, "invalid_request", f"channel must be one of {', '.join(_CHANNELS)}")
    for flag in ("wait", "bad_signature"):
        if flag in data and not isinstance(data[flag], bool):
            raise SimHTTPError(400, "invalid_request", f"{flag} must be true or false")
    for text in ("body", "status", "provider_message_id", "occurred_at"):
        if data.get(text) is not None and not isinstance(data[text], str):
            raise SimHTTPError(400, "invalid_request", f"{text} must be a string")
    if not state.webhooks.enabled:
        raise SimHTTPError(409, "webhooks_disabled", "no webhook URL is configured")
    related = state.ledger.latest_for_lead(campaign_id, lead_id, channel)
    if channel is None:
        channel = related.channel if related else ("email" if kind == "bounce" else "sms")
    if data.get("occurred_at"):
        try:
            parse_clock(data["occurred_at"])
        except ValueError:
            raise SimHTTPError(400, "invalid_request", "occurred_at is not ISO 8601") from None
        when = data["occurred_at"]
    else:
        elapsed = state.wall() - related.accepted_at if related else 0.0
        when = occurred_at(
            related, elapsed, time_scale=state.config.time_scale, wall=state.wall() - elapsed
        )
    event = WebhookEvent(
        event_id=new_event_id(state.webhooks.rng),
        kind=kind,
        channel=channel,
        provider_message_id=data.get("provider_message_id")
        or (related.provider_message_id if related else None),
        campaign_id=campaign_id,
        lead_id=lead_id,
        body=data["body"] if data.get("body") is not None else _DEFAULT_TEXT[kind],
        status=data.get("status") or _DEFAULT_STATUS[kind],
        occurred_at=when,
    )
    bad_signature = data.get("bad_signature", False)
    if data.get("wait"):
        result = await state.webhooks.deliver(event, bad_signature=bad_signature)
        return web.json_response({"event": event.to_json(), "result": result.to_json()})
    queued = state.webhooks.schedule(event, 0.0, bad_signature=bad_signature)
    if not queued:
        raise SimHTTPError(503, "webhook_queue_full", "the webhook queue is full", retry_after_s=1)
    return web.json_response({"event": event.to_json(), "queued": True}, status=202)


def make_app(state: SimState) -> web.Application:
    """The aiohttp application over ``state``."""
    app = web.Application(middlewares=[_errors], client_max_size=8 * 1024 * 1024)
    app[STATE_KEY] = state
    app.router.add_post("/v1/sms", sms)
    app.router.add_post("/v1/voice", voice)
    app.router.add_post("/v1/enrich", enrich)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/_sim/health", health)
    app.router.add_get("/_sim/messages", list_messages)
    app.router.add_get("/_sim/stats", stats)
    app.router.add_post("/_sim/reset", reset)
    app.router.add_get("/_sim/config", get_config)
    app.router.add_post("/_sim/config", post_config)
    app.router.add_post("/_sim/webhooks/trigger", trigger_webhook)
    return app
