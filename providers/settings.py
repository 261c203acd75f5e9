"""Provider settings: which adapter each channel uses, its endpoint, credentials and limits.

Every field names its environment variable (see
:func:`streams.settings.setting`); ``streams.settings.settings_table(ProviderSettings)``
prints them. The defaults point at the local simulator (HTTP on
127.0.0.1:8099, SMTP on 127.0.0.1:8025), so a fresh checkout runs end to
end without any provider account.

:meth:`ProviderSettings.from_env` validates everything at start-up and raises
:class:`~providers.errors.ProviderConfigError` naming the variable to fix —
an unknown adapter, a URL that is not http(s), a rate that does not parse, a
missing API key for a non-local endpoint — so a bad configuration never
waits for the first lead to show itself.

Credentials (``*_API_KEY``, ``LEADFLOW_SMTP_PASSWORD``) are excluded from
``repr`` and handed to adapters as :class:`~providers.base.Secret`.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from providers.base import Secret
from providers.breaker import BreakerConfig
from providers.errors import ProviderConfigError
from providers.http_adapter import validate_base_url
from providers.ratelimit import Rate, RateLimiter
from providers.retry import RetryPolicy
from streams.errors import ConfigError
from streams.settings import load_from_env, setting

__all__ = ["CHANNELS", "SIM_API_KEY", "Channel", "ChannelSettings", "ProviderSettings"]

#: The kinds of service, in the order they are built.
CHANNELS: Final = ("enrichment", "sms", "voice", "email", "llm")
Channel = Literal["enrichment", "sms", "voice", "email", "llm"]

#: The placeholder key the simulator accepts (it takes any non-empty bearer key).
SIM_API_KEY: Final = "sim-key"

_LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
_NO_RATE: Final = frozenset({"", "0", "none", "off", "unlimited"})


def _secret(default: str, env: str, doc: str) -> Any:
    """Like :func:`streams.settings.setting`, but kept out of ``repr``."""
    return dataclasses.field(default=default, repr=False, metadata={"env": env, "doc": doc})


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """One channel's adapter configuration, as the factory needs it."""

    channel: Channel
    adapter: str
    #: Base URL (HTTP adapters) or ``host:port`` (SMTP).
    endpoint: str
    api_key: Secret
    sender: str
    rate: Rate | None
    daily_cap: int
    #: Rate-limit sharing key: channels naming the same account share one limiter.
    account: str
    default_cost: float
    timeout: float
    #: The variable prefix, for error messages (``LEADFLOW_SMS``).
    env_prefix: str

    @property
    def provider_name(self) -> str:
        """Label-safe provider name: ``<channel>-<adapter>`` (``sms-http``)."""
        return f"{self.channel}-{self.adapter}"


@dataclass(frozen=True)
class ProviderSettings:
    """All provider settings. Build with :meth:`from_env`."""

    # --- SMS -------------------------------------------------------------------------
    sms_adapter: str = setting(
        "http",
        "LEADFLOW_SMS_ADAPTER",
        "SMS adapter: http (the generic JSON API) or a registered one.",
    )
    sms_url: str = setting(
        "http://127.0.0.1:8099", "LEADFLOW_SMS_URL", "Base URL of the SMS provider's API."
    )
    sms_api_key: str = _secret(
        SIM_API_KEY,
        "LEADFLOW_SMS_API_KEY",
        "SMS API key (Bearer). Required for a non-local URL; never logged.",
    )
    sms_from: str = setting(
        "+14155550100", "LEADFLOW_SMS_FROM", "Default SMS sender number (E.164) or sender id."
    )
    sms_rate: str = setting(
        "100/60",
        "LEADFLOW_SMS_RATE",
        "SMS rate limit COUNT/SECONDS (100/60, 5/s), spread evenly; 0 = none.",
    )
    sms_daily_cap: int = setting(
        0, "LEADFLOW_SMS_DAILY_CAP", "Most SMS per day for the account; 0 = no cap."
    )
    sms_account: str = setting(
        "",
        "LEADFLOW_SMS_ACCOUNT",
        "Provider account name; channels naming one account share its limits.",
    )
    sms_cost_units: float = setting(
        1.0, "LEADFLOW_SMS_COST_UNITS", "Cost units per SMS when the provider reports none."
    )

    # --- voice -----------------------------------------------------------------------
    voice_adapter: str = setting(
        "http", "LEADFLOW_VOICE_ADAPTER", "Voice adapter: http or a registered one."
    )
    voice_url: str = setting(
        "http://127.0.0.1:8099", "LEADFLOW_VOICE_URL", "Base URL of the voice provider's API."
    )
    voice_api_key: str = _secret(
        SIM_API_KEY, "LEADFLOW_VOICE_API_KEY", "Voice API key. Required for a non-local URL."
    )
    voice_from: str = setting("+14155550100", "LEADFLOW_VOICE_FROM", "Default caller id (E.164).")
    voice_rate: str = setting(
        "60/60", "LEADFLOW_VOICE_RATE", "Voice rate limit COUNT/SECONDS; 0 = none."
    )
    voice_daily_cap: int = setting(0, "LEADFLOW_VOICE_DAILY_CAP", "Most calls per day; 0 = no cap.")
    voice_account: str = setting("", "LEADFLOW_VOICE_ACCOUNT", "Provider account name (see SMS).")
    voice_cost_units: float = setting(
        3.0, "LEADFLOW_VOICE_COST_UNITS", "Cost units per call when the provider reports none."
    )

    # --- email -----------------------------------------------------------------------
    email_adapter: str = setting("smtp", "LEADFLOW_EMAIL_ADAPTER", "Email adapter: smtp.")
    smtp_host: str = setting("127.0.0.1", "LEADFLOW_SMTP_HOST", "SMTP server host.")
    smtp_port: int = setting(8025, "LEADFLOW_SMTP_PORT", "SMTP server port.")
    smtp_username: str = setting("", "LEADFLOW_SMTP_USERNAME", "SMTP login; empty = no AUTH.")
    smtp_password: str = _secret("", "LEADFLOW_SMTP_PASSWORD", "SMTP password; never logged.")
    smtp_tls: str = setting(
        "none", "LEADFLOW_SMTP_TLS", "none, starttls (port 587) or tls (implicit, port 465)."
    )
    email_from: str = setting(
        "outreach@leadflow.test", "LEADFLOW_EMAIL_FROM", "Default From address."
    )
    email_rate: str = setting(
        "100/60", "LEADFLOW_EMAIL_RATE", "Email rate limit COUNT/SECONDS; 0 = none."
    )
    email_daily_cap: int = setting(
        0, "LEADFLOW_EMAIL_DAILY_CAP", "Most emails per day; 0 = no cap."
    )
    email_account: str = setting("", "LEADFLOW_EMAIL_ACCOUNT", "Provider account name (see SMS).")
    email_cost_units: float = setting(0.1, "LEADFLOW_EMAIL_COST_UNITS", "Cost units per email.")

    # --- enrichment --------------------------------------------------------------------
    enrich_adapter: str = setting("http", "LEADFLOW_ENRICH_ADAPTER", "Enrichment adapter: http.")
    enrich_url: str = setting(
        "http://127.0.0.1:8099", "LEADFLOW_ENRICH_URL", "Base URL of the enrichment API."
    )
    enrich_api_key: str = _secret(
        SIM_API_KEY, "LEADFLOW_ENRICH_API_KEY", "Enrichment API key. Required for a non-local URL."
    )
    enrich_rate: str = setting(
        "60/60", "LEADFLOW_ENRICH_RATE", "Enrichment requests (batches) COUNT/SECONDS; 0 = none."
    )
    enrich_daily_cap: int = setting(
        0, "LEADFLOW_ENRICH_DAILY_CAP", "Most batch requests per day; 0 = no cap."
    )
    enrich_account: str = setting("", "LEADFLOW_ENRICH_ACCOUNT", "Provider account name (see SMS).")
    enrich_batch_size: int = setting(
        100, "LEADFLOW_ENRICH_BATCH_SIZE", "Leads per enrichment request (provider maximum)."
    )
    enrich_cost_units: float = setting(
        0.5,
        "LEADFLOW_ENRICH_COST_UNITS",
        "Cost units per looked-up lead when the provider reports none.",
    )

    # --- text generation (optional) ---------------------------------------------------
    llm_adapter: str = setting(
        "off",
        "LEADFLOW_LLM_ADAPTER",
        "Text generation: off (default) or openai (any compatible API).",
    )
    llm_url: str = setting(
        "http://127.0.0.1:8099", "LEADFLOW_LLM_URL", "Base URL of the chat-completions API."
    )
    llm_api_key: str = _secret(
        SIM_API_KEY,
        "LEADFLOW_LLM_API_KEY",
        "Chat-completions API key. Required for a non-local URL.",
    )
    llm_model: str = setting(
        "leadflow-sim", "LEADFLOW_LLM_MODEL", "Model name sent with each request."
    )
    llm_rate: str = setting(
        "60/60", "LEADFLOW_LLM_RATE", "Completion requests COUNT/SECONDS; 0 = none."
    )
    llm_daily_cap: int = setting(
        0, "LEADFLOW_LLM_DAILY_CAP", "Most completions per day; 0 = no cap."
    )
    llm_account: str = setting("", "LEADFLOW_LLM_ACCOUNT", "Provider account name (see SMS).")
    llm_timeout_s: float = setting(
        30.0, "LEADFLOW_LLM_TIMEOUT_S", "Per-attempt timeout of a completion (they are slow)."
    )
    llm_units_per_1k_tokens: float = setting(
        1.0, "LEADFLOW_LLM_UNITS_PER_1K_TOKENS", "Cost units per 1000 prompt + completion tokens."
    )

    # --- protection (every channel) -----------------------------------------------------
    provider_timeout_s: float = setting(
        5.0,
        "LEADFLOW_PROVIDER_TIMEOUT_S",
        "Per-attempt call timeout (SMS, voice, email, enrichment).",
    )
    retry_attempts: int = setting(
        3, "LEADFLOW_PROVIDER_RETRY_ATTEMPTS", "Attempts per call, the first included."
    )
    retry_base_s: float = setting(
        5.0,
        "LEADFLOW_PROVIDER_RETRY_BASE_S",
        "First backoff ceiling; doubles per retry (full jitter).",
    )
    retry_max_s: float = setting(60.0, "LEADFLOW_PROVIDER_RETRY_MAX_S", "Largest backoff ceiling.")
    max_retry_after_s: float = setting(
        60.0,
        "LEADFLOW_PROVIDER_MAX_RETRY_AFTER_S",
        "Longest Retry-After waited inside a call; longer ones pause the stage instead.",
    )
    max_wait_s: float = setting(
        60.0,
        "LEADFLOW_PROVIDER_MAX_WAIT_S",
        "Longest rate-limit wait inside a call before the stage is asked to pause; 0 = no cap.",
    )
    rate_headroom: float = setting(
        0.01,
        "LEADFLOW_PROVIDER_RATE_HEADROOM",
        "Fraction added to every rate window's even spacing (0.01: 100/60 is spaced as 100 "
        "per 60.6 s), room for each call's own duration. The provider's limit holds at 0 "
        "too, but then each call waits for the answer to the call N before it.",
    )
    breaker_window: int = setting(
        20, "LEADFLOW_BREAKER_WINDOW", "Circuit breaker: outcomes in the sliding window."
    )
    breaker_min_calls: int = setting(
        10, "LEADFLOW_BREAKER_MIN_CALLS", "Circuit breaker: calls needed before it can open."
    )
    breaker_error_rate: float = setting(
        0.5, "LEADFLOW_BREAKER_ERROR_RATE", "Circuit breaker: failure share that opens it (0-1]."
    )
    breaker_reset_s: float = setting(
        30.0, "LEADFLOW_BREAKER_RESET_S", "Circuit breaker: seconds open before a half-open probe."
    )
    daily_cap_tz: str = setting(
        "America/Los_Angeles",
        "LEADFLOW_DAILY_CAP_TZ",
        "Time zone whose midnight resets daily caps.",
    )
    http_pool_size: int = setting(
        100, "LEADFLOW_PROVIDER_POOL_SIZE", "Most concurrent HTTP connections to providers."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProviderSettings:
        """Load from ``environ`` (default ``os.environ``) and :meth:`validate`."""
        try:
            settings = load_from_env(cls, environ)
        except ProviderConfigError:
            raise
        except ConfigError as exc:
            raise ProviderConfigError(str(exc)) from None
        settings.validate()
        return settings

    # --- views ----------------------------------------------------------------------

    def channel(self, channel: Channel) -> ChannelSettings:
        """The settings of one channel (parses the rate; raises on a bad one)."""
        if channel == "email":
            prefix = "LEADFLOW_EMAIL"
            return ChannelSettings(
                channel="email",
                adapter=self.email_adapter,
                endpoint=f"{self.smtp_host}:{self.smtp_port}",
                api_key=Secret(self.smtp_password),
                sender=self.email_from,
                rate=_rate(self.email_rate, f"{prefix}_RATE"),
                daily_cap=self.email_daily_cap,
                account=self.email_account or "email",
                default_cost=self.email_cost_units,
                timeout=self.provider_timeout_s,
                env_prefix=prefix,
            )
        short = {"enrichment": "enrich"}.get(channel, channel)
        prefix = f"LEADFLOW_{short.upper()}"
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return ChannelSettings(
            channel=channel,
            adapter=values[f"{short}_adapter"],
            endpoint=values[f"{short}_url"],
            api_key=Secret(values[f"{short}_api_key"]),
            sender=values.get(f"{short}_from", ""),
            rate=_rate(values[f"{short}_rate"], f"{prefix}_RATE"),
            daily_cap=values[f"{short}_daily_cap"],
            account=values[f"{short}_account"] or channel,
            default_cost=values.get(f"{short}_cost_units", 1.0),
            timeout=self.llm_timeout_s if channel == "llm" else self.provider_timeout_s,
            env_prefix=prefix,
        )

    def enabled_channels(self) -> tuple[Channel, ...]:
        """Every channel except text generation when it is ``off``."""
        if self.llm_adapter == "off":
            return tuple(c for c in CHANNELS if c != "llm")
        return CHANNELS

    def retry_policy(self) -> RetryPolicy:
        """The retry policy every guard uses."""
        return RetryPolicy(
            attempts=self.retry_attempts,
            base=self.retry_base_s,
            max_delay=self.retry_max_s,
            max_retry_after=self.max_retry_after_s,
        )

    def breaker_config(self, timeout: float | None = None) -> BreakerConfig:
        """The breaker knobs (``probe_timeout`` = the call timeout)."""
        return BreakerConfig(
            window=self.breaker_window,
            min_calls=self.breaker_min_calls,
            error_rate=self.breaker_error_rate,
            reset_timeout=self.breaker_reset_s,
            probe_timeout=timeout if timeout is not None else self.provider_timeout_s,
        )

    # --- validation -----------------------------------------------------------------

    def validate(self) -> None:
        """Raise :class:`ProviderConfigError` naming the variable of the first problem."""
        from providers.factory import known_adapters

        def positive(value: float, env: str) -> None:
            if not value > 0:
                raise ProviderConfigError(f"{env}={value} must be > 0")

        positive(self.provider_timeout_s, "LEADFLOW_PROVIDER_TIMEOUT_S")
        positive(self.llm_timeout_s, "LEADFLOW_LLM_TIMEOUT_S")
        positive(self.breaker_reset_s, "LEADFLOW_BREAKER_RESET_S")
        positive(self.http_pool_size, "LEADFLOW_PROVIDER_POOL_SIZE")
        if not 0.0 <= self.rate_headroom < 1.0:
            raise ProviderConfigError(
                f"LEADFLOW_PROVIDER_RATE_HEADROOM={self.rate_headroom} must be in [0, 1)"
            )
        if self.max_wait_s < 0:
            raise ProviderConfigError(
                f"LEADFLOW_PROVIDER_MAX_WAIT_S={self.max_wait_s} must be >= 0"
            )
        if not 1 <= self.enrich_batch_size <= 10_000:
            raise ProviderConfigError(
                f"LEADFLOW_ENRICH_BATCH_SIZE={self.enrich_batch_size} must be in 1..10000"
            )
        try:
            self.retry_policy()
            self.breaker_config()
        except ProviderConfigError as exc:
            raise ProviderConfigError(
                f"{exc} (LEADFLOW_PROVIDER_RETRY_* / LEADFLOW_BREAKER_*)"
            ) from None
        RateLimiter("check", None, reset_tz=self.daily_cap_tz)  # raises on an unknown zone
        if not 0 < self.smtp_port < 65536:
            raise ProviderConfigError(f"LEADFLOW_SMTP_PORT={self.smtp_port} is not a TCP port")
        if self.smtp_tls not in ("none", "starttls", "tls"):
            raise ProviderConfigError(
                f"LEADFLOW_SMTP_TLS={self.smtp_tls!r} must be none, starttls or tls"
            )
        if not self.smtp_host.strip():
            raise ProviderConfigError("LEADFLOW_SMTP_HOST is empty")
        if "@" not in self.email_from:
            raise ProviderConfigError(f"LEADFLOW_EMAIL_FROM={self.email_from!r} is not an address")
        if self.llm_adapter != "off" and not self.llm_model.strip():
            raise ProviderConfigError("LEADFLOW_LLM_MODEL is empty but LEADFLOW_LLM_ADAPTER is on")

        adapters = known_adapters()
        rates: dict[str, tuple[Rate | None, int, str]] = {}
        for name in CHANNELS:
            short = {"enrichment": "enrich"}.get(name, name)
            adapter_env = f"LEADFLOW_{short.upper()}_ADAPTER"
            adapter = getattr(self, f"{short}_adapter")
            if name == "llm" and adapter == "off":
                continue
            if adapter not in adapters.get(name, {}):
                choices = ", ".join(
                    sorted(adapters.get(name, {})) + (["off"] if name == "llm" else [])
                )
                raise ProviderConfigError(
                    f"{adapter_env}={adapter!r} is not a known {name} adapter (choose: {choices})"
                )
            ch = self.channel(name)
            if ch.daily_cap < 0:
                raise ProviderConfigError(f"{ch.env_prefix}_DAILY_CAP={ch.daily_cap} must be >= 0")
            if ch.default_cost < 0:
                raise ProviderConfigError(f"{ch.env_prefix}_COST_UNITS must be >= 0")
            if name != "email":
                validate_base_url(ch.endpoint, env=f"{ch.env_prefix}_URL")
                host = urllib.parse.urlsplit(ch.endpoint).hostname or ""
                key = ch.api_key.reveal()
                if not key.strip():
                    raise ProviderConfigError(f"{ch.env_prefix}_API_KEY is empty")
                if host not in _LOCAL_HOSTS and key == SIM_API_KEY:
                    raise ProviderConfigError(
                        f"{ch.env_prefix}_API_KEY must be set to the provider's key "
                        f"for the non-local {ch.env_prefix}_URL"
                    )
            if name in ("sms", "voice") and not ch.sender.strip():
                raise ProviderConfigError(f"{ch.env_prefix}_FROM is empty")
            previous = rates.get(ch.account)
            if previous is not None and previous[:2] != (ch.rate, ch.daily_cap):
                raise ProviderConfigError(
                    f"channels sharing account {ch.account!r} need the same rate and daily cap "
                    f"({previous[2]} and {ch.env_prefix} differ)"
                )
            rates[ch.account] = (ch.rate, ch.daily_cap, ch.env_prefix)


def _rate(spec: str, env: str) -> Rate | None:
    if spec.strip().lower() in _NO_RATE:
        return None
    return Rate.parse(spec, env=env)
