"""The generic JSON-over-HTTP adapter for SMS and voice, and the base of every HTTP adapter.

Wire format of the generic adapter (leadflow's documented provider contract;
the simulator implements it)::

    POST {base_url}/v1/sms                       POST {base_url}/v1/voice
    Authorization: Bearer <api key>              (same headers)
    Idempotency-Key: lf1-<32 hex>
    X-Leadflow-Clock: 2026-01-05T09:30:00+00:00
    Content-Type: application/json

    {"to": "+14155552671", "from": "+14155550100",   {"to", "from", "script",
     "body": "...", "campaign_id": "c1",              "campaign_id", "lead_id",
     "lead_id": "l1", "touch": 1}                      "touch"}

    200 {"id": "msg-1", "status": "accepted", "cost_units": 1.0}
    200 {"id": "call-1", "status": "queued", "cost_units": 3.0}
    4xx/5xx {"error": {"code": "invalid_number", "message": "..."}}  (+ Retry-After on 429/503)

How answers map to outcomes (:meth:`HttpAdapterBase.error_for`):

=====================================  ==============================================
answer                                 outcome
=====================================  ==============================================
2xx with ``id`` and ``status``         :class:`~providers.base.SendResult`
2xx with garbage or an error body      :class:`~providers.errors.BadResponseError`
400/404/422 ``invalid_number`` & co    :class:`~providers.errors.InvalidRecipientError`
401, 403                               :class:`~providers.errors.AuthenticationError`
408                                    :class:`~providers.errors.ProviderTimeoutError`
429 (+ ``Retry-After``)                :class:`~providers.errors.RateLimitedError`
other 4xx, 3xx                         :class:`~providers.errors.ClientError`
5xx (+ ``Retry-After``)                :class:`~providers.errors.ServerError`
=====================================  ==============================================

**Writing a provider-specific adapter** (Twilio-, Telnyx-, SignalHouse-style)
is a subclass of :class:`HttpSmsAdapter` or :class:`HttpVoiceAdapter` that
overrides some of:

* :meth:`HttpSendAdapter.build_request` — path, body (JSON or form) and extra headers;
* :meth:`HttpSendAdapter.parse_response` — message id, status, cost from a 2xx body;
* :meth:`HttpAdapterBase.auth_headers` — e.g. HTTP Basic instead of Bearer;
* :meth:`HttpAdapterBase.error_for` — the provider's own error codes.

Raising ``KeyError``/``TypeError``/``ValueError`` inside ``parse_response`` is
fine: the base turns it into a :class:`~providers.errors.BadResponseError`.
See docs/PROVIDERS.md for a complete example.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

from providers.base import Secret, SendResult, SmsMessage, Touch, VoiceCall, clock_header
from providers.cost import Charge
from providers.errors import (
    AuthenticationError,
    BadResponseError,
    ClientError,
    InvalidRecipientError,
    ProviderCallError,
    ProviderConfigError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
)
from providers.guard import Attempt, Guard
from providers.idempotency import IDEMPOTENCY_HEADER
from providers.transport import HttpRequest, HttpResponse, HttpTransport

__all__ = [
    "CLOCK_HEADER",
    "INVALID_RECIPIENT_CODES",
    "HttpAdapterBase",
    "HttpSendAdapter",
    "HttpSmsAdapter",
    "HttpVoiceAdapter",
    "ParsedSend",
    "RequestSpec",
    "parse_retry_after",
    "validate_base_url",
]

#: Campaign-clock header sent with every request.
CLOCK_HEADER = "X-Leadflow-Clock"

#: Provider error codes that mean "this recipient is bad", not "this request is bad".
INVALID_RECIPIENT_CODES = frozenset(
    {
        "invalid_number",
        "invalid_phone",
        "invalid_phone_number",
        "invalid_to",
        "invalid_recipient",
        "invalid_email",
        "unreachable",
        "unreachable_number",
        "landline",
        "not_mobile",
        "blocked_number",
    }
)

#: Words in a 2xx ``status`` that mean the provider did not take the message.
_FAILED_STATUSES = frozenset({"failed", "error", "rejected", "undelivered", "invalid"})

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_CODE = re.compile(r"[^a-z0-9_]+")

M = TypeVar("M", bound=Touch)


def validate_base_url(url: str, *, env: str) -> str:
    """Return ``url`` without a trailing slash, or raise :class:`ProviderConfigError`.

    The URL must be ``http``/``https`` with a host and must not embed
    credentials (they belong in the API-key setting, where they stay hidden).
    """
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ProviderConfigError(f"{env}={url!r} is not an http(s) URL with a host")
    if parsed.username or parsed.password:
        raise ProviderConfigError(f"{env} must not contain credentials; use the API key setting")
    if parsed.query or parsed.fragment:
        raise ProviderConfigError(f"{env}={url!r} must not have a query or fragment")
    try:
        parsed.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ProviderConfigError(f"{env}={url!r} has an invalid port") from None
    return url.strip().rstrip("/")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (seconds or an HTTP date); None if absent/garbage."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """What a subclass asks the base to send: ``body`` as JSON or as a form."""

    path: str
    body: Mapping[str, Any] = field(repr=False)
    encoding: Literal["json", "form"] = "json"
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class ParsedSend:
    """What :meth:`HttpSendAdapter.parse_response` reads from a 2xx answer."""

    message_id: str
    status: str
    cost_units: float


class HttpAdapterBase:
    """Shared plumbing of every HTTP adapter: URL, auth, headers, error mapping.

    ``name`` is the label-safe provider name used in errors, metrics and the
    cost ledger. ``api_key`` is a :class:`~providers.base.Secret` (a plain
    string is wrapped). ``default_cost`` is charged when an answer carries no
    ``cost_units`` and when a send ends ambiguous.
    """

    #: Kind of service, for messages.
    kind: ClassVar[str] = "http"

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: Any,
        guard: Guard,
        transport: HttpTransport,
        default_cost: float = 1.0,
        url_env: str = "base_url",
    ) -> None:
        self.name = name
        self.base_url = validate_base_url(base_url, env=url_env)
        #: The credential; ``repr`` shows ``Secret('***')``, ``reveal()`` the value.
        self.api_key = api_key if isinstance(api_key, Secret) else Secret(str(api_key))
        self.guard = guard
        self.transport = transport
        self.default_cost = default_cost

    # --- hooks ----------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        """Authentication headers (``Authorization: Bearer <key>`` by default)."""
        return {"Authorization": f"Bearer {self.api_key.reveal()}"}

    def error_for(self, response: HttpResponse) -> ProviderCallError:
        """The typed error for a non-2xx ``response`` (see the module table)."""
        status = response.status
        code = _error_code(response.body)
        retry_after = parse_retry_after(response.header("retry-after"))
        detail = f"HTTP {status}" + (f" {code}" if code else "")
        if status == 429:
            return RateLimitedError(
                self.name, detail, status=status, code=code, retry_after=retry_after
            )
        if status >= 500:
            return ServerError(self.name, detail, status=status, code=code, retry_after=retry_after)
        if status in (401, 403):
            return AuthenticationError(self.name, detail, status=status, code=code)
        if status == 408:
            return ProviderTimeoutError(self.name, detail, status=status, code=code)
        if code in INVALID_RECIPIENT_CODES and status in (400, 404, 410, 422):
            return InvalidRecipientError(self.name, detail, status=status, code=code)
        if 300 <= status < 500:
            return ClientError(self.name, detail, status=status, code=code)
        return BadResponseError(self.name, f"unexpected HTTP status {status}", status=status)

    # --- plumbing -------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` under the base URL."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    async def exchange(
        self,
        spec: RequestSpec,
        attempt: Attempt,
        *,
        idempotency_key: str = "",
        clock: datetime | None = None,
    ) -> HttpResponse:
        """Send ``spec`` and return a 2xx response; raise the typed error otherwise."""
        headers = {
            "Accept": "application/json",
            CLOCK_HEADER: clock_header(clock),
            **self.auth_headers(),
        }
        if idempotency_key:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        if spec.encoding == "json":
            headers["Content-Type"] = "application/json"
            body = json.dumps(spec.body, separators=(",", ":")).encode("utf-8")
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urllib.parse.urlencode(spec.body, doseq=True).encode("ascii")
        headers.update(spec.headers)
        response = await self.transport.send(
            HttpRequest(
                provider=self.name,
                method=spec.method,
                url=self.url(spec.path),
                headers=headers,
                body=body,
                timeout=attempt.timeout,
            )
        )
        if not 200 <= response.status < 300:
            raise self.error_for(response)
        return response

    def json_object(self, response: HttpResponse) -> dict[str, Any]:
        """The 2xx body as a JSON object, or :class:`BadResponseError`.

        A 2xx whose body is an error object (``{"error": ...}``) is garbage too.
        """
        try:
            data = json.loads(response.body)
        except (ValueError, UnicodeDecodeError):
            raise BadResponseError(
                self.name, "answer is not JSON", status=response.status
            ) from None
        if not isinstance(data, dict):
            raise BadResponseError(
                self.name,
                f"answer is a JSON {type(data).__name__}, not an object",
                status=response.status,
            )
        if data.get("error"):
            code = _error_code(response.body)
            raise BadResponseError(
                self.name, "2xx answer carries an error body", status=response.status, code=code
            )
        return data

    def cost_from(self, data: Mapping[str, Any], response: HttpResponse) -> float:
        """``cost_units`` of an answer (``default_cost`` when absent)."""
        raw = data.get("cost_units")
        if raw is None:
            return self.default_cost
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise BadResponseError(self.name, "cost_units is not a number", status=response.status)
        if raw < 0:
            raise BadResponseError(self.name, "cost_units is negative", status=response.status)
        return float(raw)

    async def aclose(self) -> None:
        """Close the transport (shared transports are closed by their owner instead)."""
        await self.transport.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"


class HttpSendAdapter(HttpAdapterBase, Generic[M]):
    """A send over HTTP: build the request, send it through the guard, read the answer.

    ``sender`` is the default ``from`` (a message's own ``sender`` wins).
    """

    #: Path of the send endpoint under the base URL.
    path: ClassVar[str] = "/v1/send"

    def __init__(self, *, sender: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sender = sender

    def build_request(self, message: M) -> RequestSpec:
        """The request for ``message`` (override for another provider's API)."""
        raise NotImplementedError

    def parse_response(self, message: M, response: HttpResponse) -> ParsedSend:
        """Read id, status and cost from a 2xx ``response`` (override for another API)."""
        data = self.json_object(response)
        message_id = data.get("id")
        if isinstance(message_id, int) and not isinstance(message_id, bool):
            message_id = str(message_id)
        if not isinstance(message_id, str) or not message_id:
            raise BadResponseError(self.name, "answer has no message id", status=response.status)
        status = data.get("status")
        if not isinstance(status, str) or not status:
            raise BadResponseError(self.name, "answer has no status", status=response.status)
        if status.lower() in _FAILED_STATUSES:
            raise BadResponseError(
                self.name, f"2xx answer with status {_label(status)!r}", status=response.status
            )
        return ParsedSend(message_id, status, self.cost_from(data, response))

    def check_recipient(self, to: str) -> None:
        """Refuse a number that is not E.164 before paying for a call."""
        if not _E164.match(to):
            raise InvalidRecipientError(self.name, "recipient is not an E.164 phone number")

    async def send(self, message: M) -> SendResult:
        """Send ``message`` under the guard; the idempotency key is the message's."""
        key = message.idempotency_key
        spec = self.build_request(message)

        async def attempt(at: Attempt) -> SendResult:
            response = await self.exchange(spec, at, idempotency_key=key, clock=message.clock)
            try:
                parsed = self.parse_response(message, response)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise BadResponseError(
                    self.name,
                    f"cannot read the answer ({type(exc).__name__})",
                    status=response.status,
                ) from None
            return SendResult(
                provider=self.name,
                message_id=parsed.message_id,
                status=parsed.status,
                cost_units=parsed.cost_units,
                idempotency_key=key,
                attempts=at.number,
            )

        return await self.guard.call(
            attempt,
            charge=lambda r: [Charge(message.campaign_id, r.cost_units)],
            side_effect=True,
            idempotency_key=key,
            ambiguous_charge=Charge(message.campaign_id, self.default_cost),
        )


class HttpSmsAdapter(HttpSendAdapter[SmsMessage]):
    """The generic SMS adapter (``POST /v1/sms``); implements ``SmsProvider``."""

    kind: ClassVar[str] = "sms"
    path: ClassVar[str] = "/v1/sms"

    def build_request(self, message: SmsMessage) -> RequestSpec:
        """``{"to", "from", "body", "campaign_id", "lead_id", "touch"}``."""
        self.check_recipient(message.to)
        return RequestSpec(
            self.path,
            {
                "to": message.to,
                "from": message.sender or self.sender,
                "body": message.body,
                "campaign_id": message.campaign_id,
                "lead_id": message.lead_id,
                "touch": message.touch,
            },
        )

    async def send_sms(self, message: SmsMessage) -> SendResult:
        """Send one text message."""
        return await self.send(message)


class HttpVoiceAdapter(HttpSendAdapter[VoiceCall]):
    """The generic voice adapter (``POST /v1/voice``); implements ``VoiceProvider``."""

    kind: ClassVar[str] = "voice"
    path: ClassVar[str] = "/v1/voice"

    def __init__(self, *, default_cost: float = 3.0, **kwargs: Any) -> None:
        super().__init__(default_cost=default_cost, **kwargs)

    def build_request(self, message: VoiceCall) -> RequestSpec:
        """``{"to", "from", "script", "campaign_id", "lead_id", "touch"}``."""
        self.check_recipient(message.to)
        return RequestSpec(
            self.path,
            {
                "to": message.to,
                "from": message.sender or self.sender,
                "script": message.script,
                "campaign_id": message.campaign_id,
                "lead_id": message.lead_id,
                "touch": message.touch,
            },
        )

    async def start_call(self, call: VoiceCall) -> SendResult:
        """Queue one voice call."""
        return await self.send(call)


def _error_code(body: bytes) -> str:
    """The provider's ``error.code`` made label-safe (``""`` when there is none).

    Only the code is kept: a provider's free-text message may quote the number
    or address, which must not reach logs.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(data, dict):
        return ""
    err = data.get("error")
    code: Any = err.get("code") if isinstance(err, dict) else None
    if not isinstance(code, str | int) or isinstance(code, bool):
        return ""
    return _label(str(code))


def _label(text: str) -> str:
    return _CODE.sub("_", text.lower()).strip("_")[:64]
