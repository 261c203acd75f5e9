"""Adapters to outside services (enrichment, SMS, voice, email, LLM) and their protection.

The public API, re-exported here:

* interfaces and messages — :mod:`providers.base`;
* typed outcomes — :mod:`providers.errors`;
* protection — :class:`Guard` composing :class:`RateLimiter`,
  :class:`CircuitBreaker`, :class:`RetryPolicy` and :class:`CostLedger`;
* adapters — :class:`HttpSmsAdapter`, :class:`HttpVoiceAdapter`,
  :class:`HttpEnrichmentAdapter`, :class:`SmtpEmailAdapter`,
  :class:`OpenAIChatAdapter`, over the :class:`HttpTransport` seam;
* configuration — :class:`ProviderSettings` and :func:`build_providers`.

docs/PROVIDERS.md explains the design. ``providers.signing`` (webhook
signatures) is a separate module and is not re-exported here.
"""

from providers.base import (
    ChatMessage,
    EmailMessage,
    EmailProvider,
    EnrichmentProvider,
    EnrichmentQuery,
    EnrichmentResult,
    GenerationRequest,
    GenerationResult,
    Secret,
    SendResult,
    SmsMessage,
    SmsProvider,
    TextGenerator,
    Touch,
    VoiceCall,
    VoiceProvider,
)
from providers.breaker import BreakerConfig, BreakerState, CircuitBreaker
from providers.cost import Charge, CostLedger, CostSnapshot, CostTotals
from providers.email_smtp import SmtpEmailAdapter
from providers.enrichment_http import HttpEnrichmentAdapter
from providers.errors import (
    AmbiguousOutcomeError,
    AuthenticationError,
    BackpressureError,
    BadResponseError,
    CircuitOpenError,
    ClientError,
    ConnectionFailedError,
    DailyCapReachedError,
    GiveUpError,
    InvalidRecipientError,
    PermanentProviderError,
    ProviderCallError,
    ProviderConfigError,
    ProviderTimeoutError,
    RateLimitedError,
    RetryableProviderError,
    ServerError,
    ThrottledError,
)
from providers.factory import Providers, build_providers, known_adapters, register_adapter
from providers.guard import Attempt, Guard, GuardObserver
from providers.http_adapter import (
    HttpAdapterBase,
    HttpSendAdapter,
    HttpSmsAdapter,
    HttpVoiceAdapter,
    ParsedSend,
    RequestSpec,
)
from providers.idempotency import IDEMPOTENCY_HEADER, idempotency_key
from providers.llm_openai import OpenAIChatAdapter
from providers.ratelimit import LimiterStats, Rate, RateLimiter
from providers.retry import RetryPolicy
from providers.settings import ChannelSettings, ProviderSettings
from providers.transport import (
    AiohttpTransport,
    HttpRequest,
    HttpResponse,
    HttpTransport,
    MockTransport,
)

__all__ = [
    "IDEMPOTENCY_HEADER",
    "AiohttpTransport",
    "AmbiguousOutcomeError",
    "Attempt",
    "AuthenticationError",
    "BackpressureError",
    "BadResponseError",
    "BreakerConfig",
    "BreakerState",
    "ChannelSettings",
    "Charge",
    "ChatMessage",
    "CircuitBreaker",
    "CircuitOpenError",
    "ClientError",
    "ConnectionFailedError",
    "CostLedger",
    "CostSnapshot",
    "CostTotals",
    "DailyCapReachedError",
    "EmailMessage",
    "EmailProvider",
    "EnrichmentProvider",
    "EnrichmentQuery",
    "EnrichmentResult",
    "GenerationRequest",
    "GenerationResult",
    "GiveUpError",
    "Guard",
    "GuardObserver",
    "HttpAdapterBase",
    "HttpEnrichmentAdapter",
    "HttpRequest",
    "HttpResponse",
    "HttpSendAdapter",
    "HttpSmsAdapter",
    "HttpTransport",
    "HttpVoiceAdapter",
    "InvalidRecipientError",
    "LimiterStats",
    "MockTransport",
    "OpenAIChatAdapter",
    "ParsedSend",
    "PermanentProviderError",
    "ProviderCallError",
    "ProviderConfigError",
    "ProviderSettings",
    "ProviderTimeoutError",
    "Providers",
    "Rate",
    "RateLimitedError",
    "RateLimiter",
    "RequestSpec",
    "RetryPolicy",
    "RetryableProviderError",
    "Secret",
    "SendResult",
    "ServerError",
    "SmsMessage",
    "SmsProvider",
    "SmtpEmailAdapter",
    "TextGenerator",
    "ThrottledError",
    "Touch",
    "VoiceCall",
    "VoiceProvider",
    "build_providers",
    "idempotency_key",
    "known_adapters",
    "register_adapter",
]
