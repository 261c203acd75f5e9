"""The simulator's configuration: dataclasses, parsing and validation.

A configuration comes from, in increasing precedence: the defaults here, a
YAML or JSON file (``--config FILE``), ``LEADFLOW_SIM_*`` environment variables
(:class:`SimSettings`) and command-line flags. At run time ``POST /_sim/config``
merges a partial mapping of the same shape as the file into the live config.

Every problem raises :class:`~streams.errors.ConfigError` with one line that
names the bad key, e.g. ``simulator config: endpoints.sms.error_rate=1.5 must be
between 0 and 1``.

File shape (every key optional)::

    host: 127.0.0.1
    port: 8099
    smtp_port: 8025
    seed: 7
    api_key: null              # null: any non-empty bearer key is accepted
    enrich_max_batch: 100
    time_scale: 1.0            # campaign-clock speed, for webhook occurred_at
    dedupe_idempotency_keys: false
    endpoints:
      sms:   {latency: {dist: lognormal, median_ms: 40, p99_ms: 400},
              error_rate: 0.01, rate_limit: "100/60", outages: [[300, 360]],
              drop_after_accept_rate: 0.0, timeout_rate: 0.0, timeout_s: 30}
      voice: {...}
      enrich: {...}
      llm: {...}
      email: {...}
    webhooks:
      url: http://127.0.0.1:6066/webhooks/sim
      delivery_rate: 0.95
      reply_rate: 0.05
      opt_out_rate: 0.02
      help_rate: 0.0
      bounce_rate: 0.03
      bad_signature_rate: 0.0
      delay: {dist: lognormal, median_ms: 500, p99_ms: 5000}
      attempts: 4
      backoff_s: 0.5
      timeout_s: 5
      queue_size: 10000
      workers: 4
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from streams.errors import ConfigError
from streams.settings import load_from_env, setting

__all__ = [
    "ENDPOINTS",
    "EndpointConfig",
    "Latency",
    "RateLimit",
    "SimConfig",
    "SimSettings",
    "WebhookConfig",
    "apply_overrides",
    "config_from_mapping",
    "config_to_mapping",
    "load_config_file",
]

#: The simulated endpoints, each with its own behaviour.
ENDPOINTS: Final = ("sms", "voice", "enrich", "llm", "email")

_DISTS: Final = ("fixed", "uniform", "lognormal")


@dataclass(frozen=True, slots=True)
class Latency:
    """A latency distribution in milliseconds.

    ``fixed`` uses ``ms``; ``uniform`` draws from [``min_ms``, ``max_ms``];
    ``lognormal`` is fitted to ``median_ms`` and ``p99_ms``.
    """

    dist: str = "fixed"
    ms: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0
    median_ms: float = 0.0
    p99_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``limit`` admitted requests in any ``per_s``-second window."""

    limit: int
    per_s: float

    def __str__(self) -> str:
        return f"{self.limit}/{self.per_s:g}"


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """How one simulated endpoint behaves."""

    latency: Latency = Latency()
    #: Share of requests answered with an injected 500.
    error_rate: float = 0.0
    #: None: unlimited.
    rate_limit: RateLimit | None = None
    #: (start_s, end_s) windows, relative to simulator start, answering 503.
    outages: tuple[tuple[float, float], ...] = ()
    #: Share of accepted messages whose response is never sent (connection dropped).
    drop_after_accept_rate: float = 0.0
    #: Share of requests that hang for ``timeout_s`` and are not accepted.
    timeout_rate: float = 0.0
    #: How long a "timeout" request hangs before answering 504.
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Where and how the simulator sends webhooks back to the pipeline."""

    #: Pipeline URL; empty turns webhooks off.
    url: str = ""
    #: Shared HMAC secret (from LEADFLOW_WEBHOOK_SECRET); required when url is set.
    secret: str = dataclasses.field(default="", repr=False)
    #: Probability that an accepted SMS/voice/email gets a delivery receipt.
    delivery_rate: float = 0.95
    #: Probability that an accepted SMS/email draws an inbound reply.
    reply_rate: float = 0.05
    #: Probability that an accepted SMS/email draws an opt-out reply (STOP, ...).
    opt_out_rate: float = 0.02
    #: Probability that an accepted SMS draws a HELP reply.
    help_rate: float = 0.0
    #: Probability that an accepted email bounces (instead of a delivery receipt).
    bounce_rate: float = 0.03
    #: Share of webhooks sent with a deliberately wrong signature.
    bad_signature_rate: float = 0.0
    #: Delay between the accept (or the previous event) and each webhook.
    delay: Latency = Latency(dist="lognormal", median_ms=500.0, p99_ms=5000.0)
    #: Delivery attempts per webhook (1 = no retry).
    attempts: int = 4
    #: First retry delay; doubles on each further attempt.
    backoff_s: float = 0.5
    #: Per-attempt HTTP timeout.
    timeout_s: float = 5.0
    #: Most webhooks waiting to be sent; beyond it new ones are dropped and counted.
    queue_size: int = 10_000
    #: Concurrent senders.
    workers: int = 4


def _default_endpoints() -> dict[str, EndpointConfig]:
    return {name: EndpointConfig() for name in ENDPOINTS}


@dataclass(frozen=True)
class SimConfig:
    """The whole simulator configuration."""

    host: str = "127.0.0.1"
    #: HTTP port; 0 picks a free one.
    port: int = 8099
    #: SMTP port; 0 picks a free one.
    smtp_port: int = 8025
    #: Seed for every random choice; None draws one from the OS.
    seed: int | None = None
    #: When set, the only bearer key accepted; otherwise any non-empty key.
    api_key: str | None = dataclasses.field(default=None, repr=False)
    #: Largest enrichment batch; larger ones get 413.
    enrich_max_batch: int = 100
    #: Campaign-clock speed relative to wall time (for webhook ``occurred_at``).
    time_scale: float = 1.0
    #: When true, a repeated Idempotency-Key returns the first answer and is not recorded.
    dedupe_idempotency_keys: bool = False
    endpoints: Mapping[str, EndpointConfig] = field(default_factory=_default_endpoints)
    webhooks: WebhookConfig = WebhookConfig()

    def endpoint(self, name: str) -> EndpointConfig:
        """The behaviour of endpoint ``name`` (one of :data:`ENDPOINTS`)."""
        return self.endpoints[name]


@dataclass(frozen=True)
class SimSettings:
    """The simulator's environment variables (see :func:`streams.settings.load_from_env`)."""

    host: str = setting("", "LEADFLOW_SIM_HOST", "Simulator bind address (default 127.0.0.1).")
    port: str = setting("", "LEADFLOW_SIM_PORT", "Simulator HTTP port (default 8099).")
    smtp_port: str = setting("", "LEADFLOW_SIM_SMTP_PORT", "Simulator SMTP port (default 8025).")
    config: str = setting("", "LEADFLOW_SIM_CONFIG", "Simulator YAML/JSON config file.")
    webhook_url: str = setting(
        "", "LEADFLOW_SIM_WEBHOOK_URL", "Where the simulator POSTs webhooks (empty: off)."
    )
    webhook_secret: str = setting(
        "", "LEADFLOW_WEBHOOK_SECRET", "Shared HMAC secret that signs provider webhooks."
    )
    seed: str = setting("", "LEADFLOW_SIM_SEED", "Simulator random seed (empty: random).")
    api_key: str = setting(
        "", "LEADFLOW_SIM_API_KEY", "The only bearer key the simulator accepts (empty: any)."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SimSettings:
        """Read the settings from ``environ`` (default ``os.environ``)."""
        return load_from_env(cls, environ)

    def as_overrides(self) -> dict[str, Any]:
        """The set variables as a config mapping (for :func:`apply_overrides`)."""
        out: dict[str, Any] = {}
        if self.host:
            out["host"] = self.host
        if self.port:
            out["port"] = _env_int("LEADFLOW_SIM_PORT", self.port)
        if self.smtp_port:
            out["smtp_port"] = _env_int("LEADFLOW_SIM_SMTP_PORT", self.smtp_port)
        if self.seed:
            out["seed"] = _env_int("LEADFLOW_SIM_SEED", self.seed)
        if self.api_key:
            out["api_key"] = self.api_key
        hooks: dict[str, Any] = {}
        if self.webhook_url:
            hooks["url"] = self.webhook_url
        if self.webhook_secret:
            hooks["secret"] = self.webhook_secret
        if hooks:
            out["webhooks"] = hooks
        return out


def _env_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid int") from None


# --- parsing -------------------------------------------------------------------


def _fail(where: str, value: Any, why: str) -> ConfigError:
    shown = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return ConfigError(f"simulator config: {where}={shown} {why}")


def _check_keys(data: Mapping[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            prefix = f"{where}." if where else ""
            known = ", ".join(sorted(allowed))
            raise ConfigError(f"simulator config: unknown key {prefix}{key} (known: {known})")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, value, "must be a mapping")
    return value


def _number(value: Any, where: str, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, value, "must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise _fail(where, value, "must be finite")
    if lo is not None and hi is not None and not lo <= number <= hi:
        raise _fail(where, value, f"must be between {lo:g} and {hi:g}")
    if lo is not None and number < lo:
        raise _fail(where, value, f"must be >= {lo:g}")
    return number


def _rate(value: Any, where: str) -> float:
    return _number(value, where, lo=0.0, hi=1.0)


def _integer(value: Any, where: str, *, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, value, "must be an integer")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise _fail(where, value, f"must be {bound}")
    return value


def _latency(value: Any, where: str, base: Latency) -> Latency:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Latency(dist="fixed", ms=_number(value, where, lo=0.0))
    data = _mapping(value, where)
    _check_keys(data, {"dist", "ms", "min_ms", "max_ms", "median_ms", "p99_ms"}, where)
    dist = data.get("dist", base.dist)
    if dist not in _DISTS:
        raise _fail(f"{where}.dist", dist, f"must be one of {', '.join(_DISTS)}")
    values = {
        key: _number(data[key], f"{where}.{key}", lo=0.0)
        for key in ("ms", "min_ms", "max_ms", "median_ms", "p99_ms")
        if key in data
    }
    latency = dataclasses.replace(base, dist=dist, **values)
    if dist == "uniform" and latency.max_ms < latency.min_ms:
        raise _fail(f"{where}.max_ms", latency.max_ms, "must be >= min_ms")
    if dist == "lognormal":
        if latency.median_ms <= 0:
            raise _fail(f"{where}.median_ms", latency.median_ms, "must be > 0 for lognormal")
        if latency.p99_ms < latency.median_ms:
            raise _fail(f"{where}.p99_ms", latency.p99_ms, "must be >= median_ms")
    return latency


def _rate_limit(value: Any, where: str) -> RateLimit | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        limit_s, sep, per_s = value.partition("/")
        try:
            limit = int(limit_s.strip())
            per = float(per_s.strip()) if sep else 1.0
        except ValueError:
            raise _fail(where, value, 'must look like "100/60" (requests/seconds)') from None
    elif isinstance(value, Mapping):
        _check_keys(value, {"limit", "per_s"}, where)
        limit = _integer(value.get("limit"), f"{where}.limit", lo=1)
        per = _number(value.get("per_s", 1.0), f"{where}.per_s", lo=0.0)
    else:
        raise _fail(where, value, 'must look like "100/60" (requests/seconds)')
    if limit < 1 or not per > 0 or not math.isfinite(per):
        raise _fail(where, value, "needs a limit >= 1 and a window > 0 s")
    return RateLimit(limit=limit, per_s=per)


def _outages(value: Any, where: str) -> tuple[tuple[float, float], ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise _fail(where, value, "must be a list of [start_s, end_s] pairs")
    windows = []
    for i, window in enumerate(value):
        here = f"{where}[{i}]"
        if not isinstance(window, list | tuple) or len(window) != 2:
            raise _fail(here, window, "must be a [start_s, end_s] pair")
        start = _number(window[0], here, lo=0.0)
        end = _number(window[1], here, lo=0.0)
        if end <= start:
            raise _fail(here, window, "must end after it starts")
        windows.append((start, end))
    return tuple(windows)


_ENDPOINT_KEYS: Final = frozenset(
    {f.name for f in dataclasses.fields(EndpointConfig)} | {"outage_for_s"}
)


def _endpoint(value: Any, where: str, base: EndpointConfig, *, uptime_s: float) -> EndpointConfig:
    data = _mapping(value, where)
    _check_keys(data, _ENDPOINT_KEYS, where)
    changes: dict[str, Any] = {}
    if "latency" in data:
        changes["latency"] = _latency(data["latency"], f"{where}.latency", base.latency)
    for key in ("error_rate", "drop_after_accept_rate", "timeout_rate"):
        if key in data:
            changes[key] = _rate(data[key], f"{where}.{key}")
    if "rate_limit" in data:
        changes["rate_limit"] = _rate_limit(data["rate_limit"], f"{where}.rate_limit")
    if "outages" in data:
        changes["outages"] = _outages(data["outages"], f"{where}.outages")
    if "outage_for_s" in data:
        length = _number(data["outage_for_s"], f"{where}.outage_for_s", lo=0.0)
        windows = changes.get("outages", base.outages)
        if length > 0:
            changes["outages"] = (*windows, (uptime_s, uptime_s + length))
    if "timeout_s" in data:
        changes["timeout_s"] = _number(data["timeout_s"], f"{where}.timeout_s", lo=0.0)
    endpoint = dataclasses.replace(base, **changes)
    total = endpoint.error_rate + endpoint.drop_after_accept_rate + endpoint.timeout_rate
    if total > 1.0 + 1e-9:
        raise _fail(
            f"{where}.error_rate", endpoint.error_rate,
            "plus drop_after_accept_rate plus timeout_rate must not exceed 1",
        )  # fmt: skip
    return endpoint


_WEBHOOK_RATES: Final = (
    "delivery_rate",
    "reply_rate",
    "opt_out_rate",
    "help_rate",
    "bounce_rate",
    "bad_signature_rate",
)


def _webhooks(value: Any, where: str, base: WebhookConfig) -> WebhookConfig:
    data = _mapping(value, where)
    _check_keys(data, {f.name for f in dataclasses.fields(WebhookConfig)}, where)
    changes: dict[str, Any] = {}
    if "url" in data:
        url = data["url"] or ""
        if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
            raise _fail(f"{where}.url", url, "must be an http:// or https:// URL")
        changes["url"] = url
    if "secret" in data:
        secret = data["secret"] or ""
        if not isinstance(secret, str):
            raise _fail(f"{where}.secret", "<hidden>", "must be a string")
        changes["secret"] = secret
    for key in _WEBHOOK_RATES:
        if key in data:
            changes[key] = _rate(data[key], f"{where}.{key}")
    if "delay" in data:
        changes["delay"] = _latency(data["delay"], f"{where}.delay", base.delay)
    if "attempts" in data:
        changes["attempts"] = _integer(data["attempts"], f"{where}.attempts", lo=1, hi=20)
    if "backoff_s" in data:
        changes["backoff_s"] = _number(data["backoff_s"], f"{where}.backoff_s", lo=0.0)
    if "timeout_s" in data:
        timeout = _number(data["timeout_s"], f"{where}.timeout_s", lo=0.0)
        if timeout <= 0:
            raise _fail(f"{where}.timeout_s", timeout, "must be > 0")
        changes["timeout_s"] = timeout
    if "queue_size" in data:
        changes["queue_size"] = _integer(data["queue_size"], f"{where}.queue_size", lo=1)
    if "workers" in data:
        changes["workers"] = _integer(data["workers"], f"{where}.workers", lo=1, hi=64)
    hooks = dataclasses.replace(base, **changes)
    if hooks.reply_rate + hooks.opt_out_rate + hooks.help_rate > 1.0 + 1e-9:
        raise _fail(
            f"{where}.reply_rate", hooks.reply_rate,
            "plus opt_out_rate plus help_rate must not exceed 1",
        )  # fmt: skip
    return hooks


_TOP_KEYS: Final = frozenset({f.name for f in dataclasses.fields(SimConfig)})


def apply_overrides(
    base: SimConfig, data: Mapping[str, Any], *, uptime_s: float = 0.0
) -> SimConfig:
    """``base`` with the (partial) mapping ``data`` merged in, validated.

    ``uptime_s`` is the simulator's age; an endpoint's ``outage_for_s: N`` adds
    the outage window [uptime_s, uptime_s + N]. Raises ConfigError.
    """
    data = _mapping(data, "<config>")
    _check_keys(data, _TOP_KEYS, "")
    changes: dict[str, Any] = {}
    if "host" in data:
        host = data["host"]
        if not isinstance(host, str) or not host:
            raise _fail("host", host, "must be a non-empty host name or address")
        changes["host"] = host
    for key in ("port", "smtp_port"):
        if key in data:
            changes[key] = _integer(data[key], key, lo=0, hi=65535)
    if "seed" in data:
        seed = data["seed"]
        changes["seed"] = None if seed is None else _integer(seed, "seed", lo=0)
    if "api_key" in data:
        key = data["api_key"]
        if key is not None and (not isinstance(key, str) or not key):
            raise _fail("api_key", "<hidden>", "must be a non-empty string or null")
        changes["api_key"] = key
    if "enrich_max_batch" in data:
        changes["enrich_max_batch"] = _integer(
            data["enrich_max_batch"], "enrich_max_batch", lo=1, hi=100_000
        )
    if "time_scale" in data:
        scale = _number(data["time_scale"], "time_scale", lo=0.0)
        if scale <= 0:
            raise _fail("time_scale", scale, "must be > 0")
        changes["time_scale"] = scale
    if "dedupe_idempotency_keys" in data:
        flag = data["dedupe_idempotency_keys"]
        if not isinstance(flag, bool):
            raise _fail("dedupe_idempotency_keys", flag, "must be true or false")
        changes["dedupe_idempotency_keys"] = flag
    if "endpoints" in data:
        section = _mapping(data["endpoints"], "endpoints")
        _check_keys(section, frozenset(ENDPOINTS), "endpoints")
        endpoints = dict(base.endpoints)
        for name, value in section.items():
            endpoints[name] = _endpoint(
                value, f"endpoints.{name}", endpoints[name], uptime_s=uptime_s
            )
        changes["endpoints"] = endpoints
    if "webhooks" in data:
        changes["webhooks"] = _webhooks(data["webhooks"], "webhooks", base.webhooks)
    config = dataclasses.replace(base, **changes)
    _check_whole(config)
    return config


def _check_whole(config: SimConfig) -> None:
    hooks = config.webhooks
    if hooks.url and not hooks.secret:
        raise ConfigError(
            "simulator config: webhooks.url is set but the webhook secret is missing "
            "(set LEADFLOW_WEBHOOK_SECRET or pass --webhook-secret)"
        )
    if hooks.secret and len(hooks.secret) < 16:
        raise ConfigError(
            "simulator config: webhooks.secret (LEADFLOW_WEBHOOK_SECRET) "
            "must be at least 16 characters"
        )


def config_from_mapping(data: Mapping[str, Any]) -> SimConfig:
    """A validated config from a mapping shaped like the config file."""
    return apply_overrides(SimConfig(), data)


def load_config_file(path: Path | str) -> dict[str, Any]:
    """The mapping in a YAML (``.yaml``/``.yml``) or JSON file; ConfigError if unusable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"simulator config: file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"simulator config: cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"simulator config: {path} does not parse: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"simulator config: {path} must hold a mapping at the top level")
    return data


def config_to_mapping(config: SimConfig) -> dict[str, Any]:
    """The config as JSON-ready data, secrets masked (for ``GET /_sim/config``)."""
    out = {
        "host": config.host,
        "port": config.port,
        "smtp_port": config.smtp_port,
        "seed": config.seed,
        "api_key": None if config.api_key is None else "<set>",
        "enrich_max_batch": config.enrich_max_batch,
        "time_scale": config.time_scale,
        "dedupe_idempotency_keys": config.dedupe_idempotency_keys,
        "endpoints": {
            name: {
                "latency": dataclasses.asdict(ep.latency),
                "error_rate": ep.error_rate,
                "rate_limit": None if ep.rate_limit is None else str(ep.rate_limit),
                "outages": [list(w) for w in ep.outages],
                "drop_after_accept_rate": ep.drop_after_accept_rate,
                "timeout_rate": ep.timeout_rate,
                "timeout_s": ep.timeout_s,
            }
            for name, ep in config.endpoints.items()
        },
        "webhooks": {
            **{
                f.name: getattr(config.webhooks, f.name)
                for f in dataclasses.fields(WebhookConfig)
                if f.name not in {"secret", "delay"}
            },
            "secret": "<set>" if config.webhooks.secret else None,
            "delay": dataclasses.asdict(config.webhooks.delay),
        },
    }
    return out
