"""The provider interfaces: one small protocol per kind of service, and their messages.

Kinds of service and what the pipeline calls:

=================  ======================================  ===============================
kind               protocol                                call
=================  ======================================  ===============================
enrichment         :class:`EnrichmentProvider`             ``await enrich(queries)``
SMS                :class:`SmsProvider`                    ``await send_sms(message)``
voice              :class:`VoiceProvider`                  ``await start_call(call)``
email              :class:`EmailProvider`                  ``await send_email(message)``
text generation    :class:`TextGenerator` (optional)       ``await generate(request)``
=================  ======================================  ===============================

Every adapter runs each call through its :class:`~providers.guard.Guard`
(rate limit, circuit breaker, timeout, retries, cost accounting), so a
successful return is final and a failure is one of the typed errors in
:mod:`providers.errors`.

Messages are frozen dataclasses. Personal data (numbers, addresses, names,
message bodies) is excluded from ``repr`` so a logged message leaks nothing;
so are credentials (:class:`Secret`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal, Protocol, runtime_checkable

from providers.idempotency import idempotency_key

__all__ = [
    "ChatMessage",
    "EmailMessage",
    "EmailProvider",
    "EnrichmentProvider",
    "EnrichmentQuery",
    "EnrichmentResult",
    "GenerationRequest",
    "GenerationResult",
    "Secret",
    "SendResult",
    "SmsMessage",
    "SmsProvider",
    "TextGenerator",
    "Touch",
    "VoiceCall",
    "VoiceProvider",
    "clock_header",
]


def _no_headers() -> Mapping[str, str]:
    return MappingProxyType({})


class Secret:
    """A credential that never shows in ``repr``, ``str`` or f-strings.

    Call :meth:`reveal` at the one place the value goes on the wire.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value itself."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def clock_header(clock: datetime | None) -> str:
    """ISO 8601 value of ``X-Leadflow-Clock`` (now, in UTC, when ``clock`` is None)."""
    moment = clock if clock is not None else datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


# --- sends -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Touch:
    """What every send has: which campaign, lead and touch it is, and the campaign clock.

    ``touch`` is the step number in the campaign sequence (1-based).
    ``clock`` is the campaign-clock time of the send (``X-Leadflow-Clock``).
    """

    campaign_id: str
    lead_id: str
    touch: int
    clock: datetime | None = None

    @property
    def idempotency_key(self) -> str:
        """Stable key of this send, from (campaign, lead, touch): :mod:`providers.idempotency`."""
        return idempotency_key(self.campaign_id, self.lead_id, self.touch)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmsMessage(Touch):
    """One text message. ``to`` is E.164 (``+15551234567``); ``sender`` overrides the default."""

    to: str = field(repr=False)
    body: str = field(repr=False)
    sender: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class VoiceCall(Touch):
    """One outbound call that plays or speaks ``script``."""

    to: str = field(repr=False)
    script: str = field(repr=False)
    sender: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailMessage(Touch):
    """One commercial email.

    The caller supplies the compliance parts and the adapter sends them as
    given: ``list_unsubscribe`` (the ``List-Unsubscribe`` header value, e.g.
    ``<https://example.com/u/abc>, <mailto:unsub@example.com>``) is required,
    and ``text`` (and ``html``) must already carry the unsubscribe link and
    the sender's postal address (CAN-SPAM). ``headers`` adds extra headers.
    """

    to: str = field(repr=False)
    subject: str = field(repr=False)
    text: str = field(repr=False)
    list_unsubscribe: str = field(repr=False)
    html: str | None = field(default=None, repr=False)
    sender: str = ""
    reply_to: str = field(default="", repr=False)
    headers: Mapping[str, str] = field(default_factory=_no_headers, repr=False)

    def __post_init__(self) -> None:
        if not self.list_unsubscribe.strip():
            raise ValueError("EmailMessage.list_unsubscribe is required (CAN-SPAM)")


@dataclass(frozen=True, slots=True)
class SendResult:
    """A send the provider accepted.

    ``status`` is the provider's word for it (``accepted``, ``queued``);
    ``attempts`` counts the tries the guard needed (1 = first time).
    """

    provider: str
    message_id: str
    status: str
    cost_units: float
    idempotency_key: str
    attempts: int = 1


class SmsProvider(Protocol):
    """Sends text messages."""

    name: str

    async def send_sms(self, message: SmsMessage) -> SendResult:
        """Send ``message``; raise a :mod:`providers.errors` error on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class VoiceProvider(Protocol):
    """Places voice calls."""

    name: str

    async def start_call(self, call: VoiceCall) -> SendResult:
        """Queue ``call``; raise a :mod:`providers.errors` error on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class EmailProvider(Protocol):
    """Sends email."""

    name: str

    async def send_email(self, message: EmailMessage) -> SendResult:
        """Send ``message``; raise a :mod:`providers.errors` error on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


# --- enrichment -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrichmentQuery:
    """One lead to look up. ``key`` is the caller's dedup key, echoed in the result.

    ``campaign_id`` is not sent; it attributes the batch's cost to campaigns.
    """

    key: str
    email: str = field(default="", repr=False)
    phone: str = field(default="", repr=False)
    company: str = field(default="", repr=False)
    title: str = field(default="", repr=False)
    country: str = ""
    state: str = ""
    campaign_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrichmentResult:
    """What the enrichment provider knows about one lead (``found=False``: nothing).

    ``company_size`` is a head count. ``extra`` keeps any other scalar fields
    the provider sent (e.g. ``title``, ``job_function``).
    """

    key: str
    found: bool
    industry: str | None = None
    company_size: int | None = None
    seniority: str | None = None
    revenue_band: str | None = None
    timezone: str | None = None
    linkedin_url: str | None = field(default=None, repr=False)
    extra: Mapping[str, str | int | float | bool] = field(
        default_factory=lambda: MappingProxyType({}), repr=False
    )


class EnrichmentProvider(Protocol):
    """Looks leads up in batches of at most ``max_batch``.

    ``enrich`` takes any number of queries, splits them into batches and
    returns one result per query, in query order.
    """

    name: str
    max_batch: int

    async def enrich(self, queries: Sequence[EnrichmentQuery]) -> list[EnrichmentResult]:
        """Look ``queries`` up; raise a :mod:`providers.errors` error on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


# --- text generation ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat turn; ``content`` is kept out of ``repr`` (it may quote the lead)."""

    role: Literal["system", "user", "assistant"]
    content: str = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRequest:
    """A chat-completion request for an AI follow-up or a draft.

    ``campaign_id`` attributes the cost; ``model`` overrides the configured one.
    """

    messages: Sequence[ChatMessage]
    campaign_id: str = ""
    model: str = ""
    max_tokens: int = 300
    temperature: float = 0.7


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationResult:
    """The generated text and what it cost."""

    provider: str
    text: str = field(repr=False)
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cost_units: float


@runtime_checkable
class TextGenerator(Protocol):
    """Generates text through an OpenAI-compatible chat-completions API (optional)."""

    name: str

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Complete ``request``; raise a :mod:`providers.errors` error on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
