"""Build the configured adapters, each behind its own guard, from :class:`ProviderSettings`.

::

    settings = ProviderSettings.from_env()          # validates: fails at start-up
    async with build_providers(settings) as providers:
        await providers.sms.send_sms(message)
        providers.set_partition_share(owned=3, total=8)   # on every rebalance

What is shared and what is not:

* one :class:`~providers.transport.AiohttpTransport` (one ``ClientSession``,
  one connection pool) for every HTTP adapter;
* one :class:`~providers.ratelimit.RateLimiter` per provider *account*
  (``LEADFLOW_<CHANNEL>_ACCOUNT``; by default each channel is its own account);
* one :class:`~providers.breaker.CircuitBreaker` and one
  :class:`~providers.guard.Guard` per channel;
* one :class:`~providers.cost.CostLedger` for everything.

Adapters are looked up by (channel, name) in a registry;
:func:`register_adapter` adds one (a Twilio-style subclass, for example).
An unknown name is a :class:`~providers.errors.ProviderConfigError` at
start-up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from providers.base import (
    EmailProvider,
    EnrichmentProvider,
    SmsProvider,
    TextGenerator,
    VoiceProvider,
)
from providers.breaker import CircuitBreaker
from providers.cost import CostLedger
from providers.email_smtp import SmtpEmailAdapter, TlsMode
from providers.enrichment_http import HttpEnrichmentAdapter
from providers.errors import ProviderConfigError
from providers.guard import Guard, GuardObserver
from providers.http_adapter import HttpSmsAdapter, HttpVoiceAdapter
from providers.llm_openai import OpenAIChatAdapter
from providers.ratelimit import Clock, RateLimiter, Sleep, WallClock
from providers.settings import CHANNELS, ChannelSettings, ProviderSettings
from providers.transport import AiohttpTransport, HttpTransport

__all__ = [
    "AdapterFactory",
    "BuildContext",
    "Providers",
    "build_providers",
    "known_adapters",
    "register_adapter",
]


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What an adapter factory gets besides its channel settings."""

    settings: ProviderSettings
    guard: Guard
    transport: HttpTransport


#: ``factory(channel_settings, context) -> adapter``.
AdapterFactory = Callable[[ChannelSettings, BuildContext], Any]

_REGISTRY: dict[str, dict[str, AdapterFactory]] = {channel: {} for channel in CHANNELS}


def register_adapter(channel: str, name: str, factory: AdapterFactory) -> None:
    """Make ``LEADFLOW_<CHANNEL>_ADAPTER=name`` build adapters with ``factory``."""
    if channel not in _REGISTRY:
        raise ValueError(f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}")
    if not name or name == "off" or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"adapter name {name!r} must be a non-empty label (letters, digits, -_)")
    _REGISTRY[channel][name] = factory


def known_adapters() -> Mapping[str, frozenset[str]]:
    """Registered adapter names per channel."""
    return {channel: frozenset(names) for channel, names in _REGISTRY.items()}


def _http_kwargs(ch: ChannelSettings, ctx: BuildContext) -> dict[str, Any]:
    return {
        "name": ch.provider_name,
        "base_url": ch.endpoint,
        "api_key": ch.api_key,
        "guard": ctx.guard,
        "transport": ctx.transport,
        "default_cost": ch.default_cost,
        "url_env": f"{ch.env_prefix}_URL",
    }


def _sms_http(ch: ChannelSettings, ctx: BuildContext) -> HttpSmsAdapter:
    return HttpSmsAdapter(sender=ch.sender, **_http_kwargs(ch, ctx))


def _voice_http(ch: ChannelSettings, ctx: BuildContext) -> HttpVoiceAdapter:
    return HttpVoiceAdapter(sender=ch.sender, **_http_kwargs(ch, ctx))


def _enrich_http(ch: ChannelSettings, ctx: BuildContext) -> HttpEnrichmentAdapter:
    return HttpEnrichmentAdapter(max_batch=ctx.settings.enrich_batch_size, **_http_kwargs(ch, ctx))


def _llm_openai(ch: ChannelSettings, ctx: BuildContext) -> OpenAIChatAdapter:
    kwargs = _http_kwargs(ch, ctx)
    kwargs.pop("default_cost")
    return OpenAIChatAdapter(
        model=ctx.settings.llm_model,
        units_per_1k_tokens=ctx.settings.llm_units_per_1k_tokens,
        **kwargs,
    )


def _email_smtp(ch: ChannelSettings, ctx: BuildContext) -> SmtpEmailAdapter:
    s = ctx.settings
    tls: TlsMode
    if s.smtp_tls == "starttls":
        tls = "starttls"
    elif s.smtp_tls == "tls":
        tls = "tls"
    elif s.smtp_tls == "none":
        tls = "none"
    else:
        raise ProviderConfigError(f"LEADFLOW_SMTP_TLS={s.smtp_tls!r} must be none, starttls or tls")
    return SmtpEmailAdapter(
        name=ch.provider_name,
        host=s.smtp_host,
        port=s.smtp_port,
        guard=ctx.guard,
        sender=ch.sender,
        username=s.smtp_username,
        password=ch.api_key,
        tls=tls,
        default_cost=ch.default_cost,
    )


register_adapter("sms", "http", _sms_http)
register_adapter("voice", "http", _voice_http)
register_adapter("enrichment", "http", _enrich_http)
register_adapter("email", "smtp", _email_smtp)
register_adapter("llm", "openai", _llm_openai)


@dataclass
class Providers:
    """The built adapters and the protection state behind them."""

    enrichment: EnrichmentProvider
    sms: SmsProvider
    voice: VoiceProvider
    email: EmailProvider
    llm: TextGenerator | None
    ledger: CostLedger
    transport: HttpTransport
    #: Limiters by account name.
    limiters: dict[str, RateLimiter] = field(default_factory=dict)
    #: Guards (and so breakers) by channel.
    guards: dict[str, Guard] = field(default_factory=dict)

    def breaker(self, channel: str) -> CircuitBreaker:
        """The circuit breaker of ``channel`` (the stage reads ``state``/``retry_at``)."""
        breaker = self.guards[channel].breaker
        assert breaker is not None
        return breaker

    def set_partition_share(self, owned: int, total: int) -> None:
        """This worker owns ``owned`` of ``total`` partitions: take that share of every limit."""
        if total < 1 or not 0 <= owned <= total:
            raise ValueError(f"need 0 <= owned <= total and total >= 1, got {owned}/{total}")
        # Owning nothing: keep a minimal share; no work arrives anyway.
        share = max(owned, 1) / total
        for limiter in self.limiters.values():
            limiter.set_share(share)

    async def aclose(self) -> None:
        """Close every adapter and the shared transport."""
        for adapter in (self.enrichment, self.sms, self.voice, self.email, self.llm):
            if adapter is not None and getattr(adapter, "transport", None) is not self.transport:
                await adapter.aclose()
        await self.transport.aclose()

    async def __aenter__(self) -> Providers:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def build_providers(
    settings: ProviderSettings | None = None,
    *,
    transport: HttpTransport | None = None,
    ledger: CostLedger | None = None,
    observer: GuardObserver | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    wall: WallClock | None = None,
) -> Providers:
    """Validate ``settings`` (default: from the environment) and build every enabled adapter.

    Raises :class:`ProviderConfigError` for any configuration problem, before
    any network traffic.
    """
    settings = settings if settings is not None else ProviderSettings.from_env()
    settings.validate()
    ledger = ledger if ledger is not None else CostLedger()
    transport = (
        transport if transport is not None else AiohttpTransport(limit=settings.http_pool_size)
    )
    limiters: dict[str, RateLimiter] = {}
    guards: dict[str, Guard] = {}
    built: dict[str, Any] = {}
    retry = settings.retry_policy()
    max_wait = settings.max_wait_s or None
    for channel in settings.enabled_channels():
        ch = settings.channel(channel)
        limiter = limiters.get(ch.account)
        if limiter is None:
            limiter = RateLimiter(
                ch.account,
                ch.rate,
                daily_cap=ch.daily_cap,
                reset_tz=settings.daily_cap_tz,
                headroom=settings.rate_headroom,
                clock=clock,
                sleep=sleep,
                wall=wall,
            )
            limiters[ch.account] = limiter
        guard = Guard(
            ch.provider_name,
            limiter=limiter if (ch.rate is not None or ch.daily_cap) else None,
            breaker=CircuitBreaker(
                ch.provider_name, settings.breaker_config(ch.timeout), clock=clock
            ),
            retry=retry,
            timeout=ch.timeout,
            max_wait=max_wait,
            ledger=ledger,
            observer=observer,
            clock=clock,
            sleep=sleep,
        )
        guards[channel] = guard
        factory = _REGISTRY[channel].get(ch.adapter)
        if factory is None:  # validate() checked; a registry change since is still caught
            raise ProviderConfigError(f"{ch.env_prefix}_ADAPTER={ch.adapter!r} is not registered")
        built[channel] = factory(ch, BuildContext(settings, guard, transport))
    return Providers(
        enrichment=built["enrichment"],
        sms=built["sms"],
        voice=built["voice"],
        email=built["email"],
        llm=built.get("llm"),
        ledger=ledger,
        transport=transport,
        limiters=limiters,
        guards=guards,
    )
