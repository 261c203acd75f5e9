"""How leadflow authenticates to Kafka: the one place that builds client security config.

:class:`KafkaSecuritySettings` reads ``LEADFLOW_KAFKA_SECURITY_PROTOCOL`` and
friends. Every Kafka client leadflow makes takes its security settings from
here, in the shape its library wants:

- :func:`confluent_config` for confluent-kafka ``Producer``/``Consumer``/``AdminClient``;
- :func:`aiokafka_kwargs` for aiokafka clients;
- :func:`faust_credentials` for the Faust app's ``broker_credentials``.

With the default (``PLAINTEXT``) all three add nothing, so the local broker
works as before.

A broker that refuses us for a security reason is reported as one of the
:class:`KafkaSecurityError` subclasses, whose message names the cause in one
line: :class:`KafkaAuthError` (wrong user or password),
:class:`KafkaTlsError` (broker certificate not trusted, TLS handshake failed)
and :class:`KafkaProtocolMismatchError` (the client speaks another security
protocol than the listener, e.g. plaintext to a SASL_SSL port).
:func:`check_connection` (confluent-kafka) and :func:`check_connection_async`
(aiokafka) ask for metadata within a time bound and raise those, so a
worker or a command fails at start with the reason instead of retrying for
ever (librdkafka and aiokafka themselves only log the reason and retry).

These errors derive from :class:`~streams.errors.ConfigError`, not from
:class:`~streams.errors.KafkaUnavailableError`: a stage holds its batch and
retries a :class:`~streams.errors.TransientError` indefinitely, and a wrong
password or an untrusted certificate never heals by waiting. The fix is a
setting, so the error is a configuration error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.errors import ConfigError, KafkaUnavailableError
from streams.settings import get_settings, load_from_env, setting

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

__all__ = [
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "KafkaAuthError",
    "KafkaProtocolMismatchError",
    "KafkaSecurityError",
    "KafkaSecuritySettings",
    "KafkaTlsError",
    "aiokafka_kwargs",
    "check_connection",
    "check_connection_async",
    "confluent_config",
    "faust_credentials",
    "get_kafka_security",
    "ssl_context",
]

#: Security protocols Kafka listeners speak.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: SASL mechanisms leadflow supports (all three of its client libraries do).
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_DEFAULT_MECHANISM = "SCRAM-SHA-512"


# --- errors --------------------------------------------------------------------
class KafkaSecurityError(ConfigError):
    """The broker refused the connection because of the client's security settings."""

    reason = "kafka_security"


class KafkaAuthError(KafkaSecurityError):
    """SASL authentication failed: wrong user name, password or mechanism."""

    reason = "kafka_auth"


class KafkaTlsError(KafkaSecurityError):
    """The TLS handshake failed (e.g. the broker's certificate is not trusted)."""

    reason = "kafka_tls"


class KafkaProtocolMismatchError(KafkaSecurityError):
    """Client and listener speak different security protocols (e.g. plaintext vs TLS)."""

    reason = "kafka_protocol_mismatch"


# --- settings ------------------------------------------------------------------
def _secret(env: str, doc: str) -> Any:
    """Like :func:`setting`, but never shown by ``repr()``."""
    return field(default="", repr=False, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class KafkaSecuritySettings:
    """How clients authenticate to Kafka. Build with :meth:`from_env`."""

    security_protocol: str = setting(
        "PLAINTEXT",
        "LEADFLOW_KAFKA_SECURITY_PROTOCOL",
        "Security protocol of the Kafka listener: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    sasl_mechanism: str = setting(
        "",
        "LEADFLOW_KAFKA_SASL_MECHANISM",
        "SASL mechanism for SASL_* protocols: SCRAM-SHA-512 (used when empty), "
        "SCRAM-SHA-256 or PLAIN.",
    )
    username: str = setting(
        "", "LEADFLOW_KAFKA_USERNAME", "SASL user name (required for SASL_* protocols)."
    )
    password: str = _secret(
        "LEADFLOW_KAFKA_PASSWORD", "SASL password (required for SASL_* protocols; never logged)."
    )
    ca_file: str = setting(
        "",
        "LEADFLOW_KAFKA_CA_FILE",
        "PEM file of the CA(s) that signed the broker certificate (SSL, SASL_SSL); "
        "empty = the system trust store.",
    )
    cert_file: str = setting(
        "",
        "LEADFLOW_KAFKA_CERT_FILE",
        "PEM client certificate for mutual TLS (optional; needs LEADFLOW_KAFKA_KEY_FILE).",
    )
    key_file: str = setting(
        "", "LEADFLOW_KAFKA_KEY_FILE", "PEM private key of the client certificate (mutual TLS)."
    )
    key_password: str = _secret(
        "LEADFLOW_KAFKA_KEY_PASSWORD", "Password of LEADFLOW_KAFKA_KEY_FILE when it is encrypted."
    )
    check_hostname: bool = setting(
        True,
        "LEADFLOW_KAFKA_SSL_CHECK_HOSTNAME",
        "Check that the broker certificate names the host connected to (SSL, SASL_SSL).",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecuritySettings:
        """Build and validate from ``environ`` (default ``os.environ``).

        Raises :class:`ConfigError` naming the variable that is wrong.
        """
        loaded = load_from_env(cls, environ)
        normal = dataclasses.replace(
            loaded,
            security_protocol=loaded.security_protocol.strip().upper(),
            sasl_mechanism=loaded.sasl_mechanism.strip().upper(),
        )
        normal.validate()
        return normal

    def validate(self) -> None:
        """Raise :class:`ConfigError` when the settings contradict each other."""
        protocol = self.security_protocol
        if protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"LEADFLOW_KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of "
                + ", ".join(SECURITY_PROTOCOLS)
            )
        if self.uses_sasl:
            if self.mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"LEADFLOW_KAFKA_SASL_MECHANISM={self.sasl_mechanism!r} is not one of "
                    + ", ".join(SASL_MECHANISMS)
                )
            missing = [
                var
                for var, value in (
                    ("LEADFLOW_KAFKA_USERNAME", self.username),
                    ("LEADFLOW_KAFKA_PASSWORD", self.password),
                )
                if not value
            ]
            if missing:
                raise ConfigError(
                    f"LEADFLOW_KAFKA_SECURITY_PROTOCOL={protocol} needs " + " and ".join(missing)
                )
        else:
            stray = [
                var
                for var, value in (
                    ("LEADFLOW_KAFKA_SASL_MECHANISM", self.sasl_mechanism),
                    ("LEADFLOW_KAFKA_USERNAME", self.username),
                    ("LEADFLOW_KAFKA_PASSWORD", self.password),
                )
                if value
            ]
            if stray:
                raise ConfigError(
                    f"{', '.join(stray)} set, but LEADFLOW_KAFKA_SECURITY_PROTOCOL={protocol} "
                    "does not use SASL (use SASL_SSL or SASL_PLAINTEXT)"
                )
        tls_files = (
            ("LEADFLOW_KAFKA_CA_FILE", self.ca_file),
            ("LEADFLOW_KAFKA_CERT_FILE", self.cert_file),
            ("LEADFLOW_KAFKA_KEY_FILE", self.key_file),
        )
        if not self.uses_tls:
            stray = [var for var, value in tls_files if value]
            if stray:
                raise ConfigError(
                    f"{', '.join(stray)} set, but LEADFLOW_KAFKA_SECURITY_PROTOCOL={protocol} "
                    "does not use TLS (use SSL or SASL_SSL)"
                )
            return
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(
                "LEADFLOW_KAFKA_CERT_FILE and LEADFLOW_KAFKA_KEY_FILE go together (mutual TLS)"
            )
        for var, value in tls_files:
            if value and not Path(value).expanduser().is_file():
                raise ConfigError(f"{var}={value}: no such file")

    # --- derived values ----------------------------------------------------------
    @property
    def uses_sasl(self) -> bool:
        """True for SASL_PLAINTEXT and SASL_SSL."""
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        """True for SSL and SASL_SSL."""
        return self.security_protocol.endswith("SSL")

    @property
    def mechanism(self) -> str:
        """The SASL mechanism in use (SCRAM-SHA-512 when not set)."""
        return self.sasl_mechanism or _DEFAULT_MECHANISM

    def describe(self) -> str:
        """One line for messages and logs (never the password)."""
        parts = [self.security_protocol]
        if self.uses_sasl:
            parts.append(f"{self.mechanism} as user {self.username!r}")
        if self.uses_tls:
            parts.append(f"CA {self.ca_file or 'system trust store'}")
            if self.cert_file:
                parts.append(f"client certificate {self.cert_file}")
        return ", ".join(parts)


_cached: KafkaSecuritySettings | None = None


def get_kafka_security() -> KafkaSecuritySettings:
    """Kafka security settings from the process environment, built once."""
    global _cached
    if _cached is None:
        _cached = KafkaSecuritySettings.from_env()
    return _cached


# --- client config -------------------------------------------------------------
def confluent_config(security: KafkaSecuritySettings | None = None) -> dict[str, str]:
    """Security properties for a confluent-kafka client (``{}`` for PLAINTEXT).

    Merge into the client's own config:
    ``Producer({"bootstrap.servers": ..., **confluent_config()})``.
    """
    s = security or get_kafka_security()
    if s.security_protocol == "PLAINTEXT":
        return {}
    conf = {"security.protocol": s.security_protocol}
    if s.uses_sasl:
        conf |= {
            "sasl.mechanism": s.mechanism,
            "sasl.username": s.username,
            "sasl.password": s.password,
        }
    if s.uses_tls:
        conf["ssl.endpoint.identification.algorithm"] = "https" if s.check_hostname else "none"
        if s.ca_file:
            conf["ssl.ca.location"] = _path(s.ca_file)
        if s.cert_file:
            conf["ssl.certificate.location"] = _path(s.cert_file)
            conf["ssl.key.location"] = _path(s.key_file)
            if s.key_password:
                conf["ssl.key.password"] = s.key_password
    return conf


def ssl_context(security: KafkaSecuritySettings | None = None) -> ssl.SSLContext | None:
    """The TLS context for aiokafka/Faust clients, or None when TLS is off."""
    s = security or get_kafka_security()
    if not s.uses_tls:
        return None
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=_path(s.ca_file) if s.ca_file else None
        )
        ctx.check_hostname = s.check_hostname
        if s.cert_file:
            ctx.load_cert_chain(
                _path(s.cert_file), _path(s.key_file), password=s.key_password or None
            )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load Kafka TLS files ({s.describe()}): {exc}") from exc
    return ctx


def aiokafka_kwargs(security: KafkaSecuritySettings | None = None) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (``AIOKafkaProducer(**aiokafka_kwargs())``)."""
    s = security or get_kafka_security()
    kwargs: dict[str, Any] = {"security_protocol": s.security_protocol}
    if s.uses_sasl:
        kwargs |= {
            "sasl_mechanism": s.mechanism,
            "sasl_plain_username": s.username,
            "sasl_plain_password": s.password,
        }
    if s.uses_tls:
        kwargs["ssl_context"] = ssl_context(s)
    return kwargs


def faust_credentials(security: KafkaSecuritySettings | None = None) -> Any:
    """The Faust app's ``broker_credentials`` (None for PLAINTEXT)."""
    import faust  # late: Faust is heavy, and most callers never need it

    s = security or get_kafka_security()
    if s.uses_sasl:
        return faust.SASLCredentials(
            username=s.username,
            password=s.password,
            mechanism=s.mechanism,
            ssl_context=ssl_context(s),
        )
    if s.uses_tls:
        return faust.SSLCredentials(ssl_context(s))
    return None


def _path(value: str) -> str:
    return str(Path(value).expanduser())


# --- connection check ----------------------------------------------------------
_TIMEOUT_S = 10.0


def check_connection(
    bootstrap: str | None = None,
    security: KafkaSecuritySettings | None = None,
    timeout_s: float = _TIMEOUT_S,
) -> int:
    """Ask the cluster for metadata with confluent-kafka; return its broker count.

    Raises a :class:`KafkaSecurityError` subclass naming the cause as soon as
    the broker refuses us for a security reason, else
    :class:`~streams.errors.KafkaUnavailableError` when it cannot be reached
    within ``timeout_s``. ``bootstrap`` defaults to the configured cluster.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    s = security or get_kafka_security()
    address = bootstrap or get_settings().bootstrap_servers
    seen = _Seen()
    conf: dict[str, Any] = {
        "bootstrap.servers": address,
        **confluent_config(s),
        # librdkafka names the cause in error callbacks and in its log lines;
        # both go to ``seen``, not to stderr.
        "error_cb": seen.error,
        "logger": seen.logger,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    }
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    while True:
        # Short metadata requests, serving callbacks in between, so a refusal
        # (which librdkafka would retry for ever) is reported at once.
        try:
            meta = admin.list_topics(timeout=min(0.25, max(0.05, deadline - time.monotonic())))
        except KafkaException as exc:
            admin.poll(0)
            cause = _rdkafka_error(address, s, seen)
            if cause is not None:
                raise cause from exc
            if time.monotonic() >= deadline:
                detail = seen.texts[-1] if seen.texts else str(exc)
                raise KafkaUnavailableError(
                    f"cannot reach Kafka at {address} within {timeout_s:g} s "
                    f"({s.describe()}): {detail}"
                ) from exc
            continue
        break
    if not meta.brokers:
        raise KafkaUnavailableError(f"Kafka at {address} returned no brokers in its metadata")
    return len(meta.brokers)


class _Seen(logging.Handler):
    """Collects librdkafka's error callbacks and log lines for :func:`_rdkafka_error`."""

    def __init__(self) -> None:
        super().__init__()
        self.codes: set[int] = set()
        self.texts: list[str] = []
        # A logger outside the logging tree: nothing reaches the app's handlers.
        self.logger = logging.Logger("leadflow.kafka_check", logging.DEBUG)
        self.logger.addHandler(self)

    def error(self, err: KafkaError) -> None:
        self.codes.add(err.code())
        self.texts.append(err.str())

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())


def _rdkafka_error(
    address: str, s: KafkaSecuritySettings, seen: _Seen
) -> KafkaSecurityError | None:
    """The security cause librdkafka reported, if any (most telling first)."""
    from confluent_kafka import KafkaError

    lower = [t.lower() for t in seen.texts]
    if any("mechanism handshake failed" in t or "current sasl state" in t for t in lower):
        return _mechanism_error(address, s)
    auth_codes = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}
    if seen.codes & auth_codes or any("authentication failed" in t for t in lower):
        return _auth_error(address, s)
    tls = [t for t in seen.texts if "ssl handshake failed" in t.lower()]
    if KafkaError._SSL in seen.codes or tls:
        detail = tls[-1] if tls else ""
        if "certificate verify failed" in detail:
            # librdkafka says only that; the same check through Python's ssl
            # module (the same OpenSSL and CA file) says why.
            detail = _verify_detail(address, s) or detail
        return _tls_error(address, s, detail)
    # The broker hangs up on a request it cannot read: plaintext to a TLS port
    # (during ApiVersions), or a request before the SASL handshake it wants.
    dropped = sum(
        "closed by peer" in t and ("apiversion_query" in t or "state up" in t) for t in lower
    )
    if dropped >= 2 or any("security.protocol" in t for t in seen.texts):
        return _mismatch_error(address, s)
    return None


def _verify_detail(address: str, s: KafkaSecuritySettings) -> str:
    """Why the broker's certificate fails verification ('' when it does not)."""
    host, _, port = address.split(",")[0].strip().rpartition(":")
    host = host.strip("[]")
    ctx = ssl_context(s)
    if ctx is None or not port.isdigit():
        return ""
    try:
        with (
            socket.create_connection((host, int(port)), timeout=3) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            return ""
    except ssl.SSLCertVerificationError as exc:
        return f"certificate verify failed: {exc.verify_message}"
    except OSError:
        return ""


def wait_for_connection(
    wait_s: float,
    on_wait: Callable[[str], None],
    bootstrap: str | None = None,
    attempt_s: float = _TIMEOUT_S,
) -> int:
    """:func:`check_connection`, retried for up to ``wait_s`` seconds while Kafka is unreachable.

    Each failed attempt (``attempt_s`` at most) is reported to ``on_wait``
    (address and cause; no record data). A security refusal is raised at once:
    waiting does not mend a wrong password. Returns the broker count.
    """
    deadline = time.monotonic() + wait_s
    attempt_s = min(attempt_s, max(0.5, wait_s / 2))  # a short wait is still said
    while True:
        left = deadline - time.monotonic()
        try:
            return check_connection(bootstrap, timeout_s=max(0.5, min(attempt_s, left)))
        except KafkaUnavailableError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaUnavailableError(f"{exc}; gave up after {wait_s:g} s") from exc
            on_wait(f"{exc}; retrying for up to {left:.0f} s more")


async def check_connection_async(
    bootstrap: str | None = None,
    security: KafkaSecuritySettings | None = None,
    timeout_s: float = _TIMEOUT_S,
) -> None:
    """Connect to the first bootstrap server with aiokafka, authenticate, ask for metadata.

    aiokafka's own clients swallow the reason into "Unable to bootstrap", so
    this opens one connection itself to see it. Raises like
    :func:`check_connection`.
    """
    from aiokafka import errors as aio_errors
    from aiokafka.conn import AIOKafkaConnection
    from aiokafka.protocol.metadata import MetadataRequest

    s = security or get_kafka_security()
    address = (bootstrap or get_settings().bootstrap_servers).split(",")[0].strip()
    host, _, port = address.rpartition(":")
    conn = AIOKafkaConnection(
        host.strip("[]"), int(port), request_timeout_ms=int(timeout_s * 1000), **aiokafka_kwargs(s)
    )
    try:
        async with asyncio.timeout(timeout_s):
            await conn.connect()
            # A SASL listener answers ApiVersions before authentication, so
            # only a real request shows that a client without SASL is refused.
            await conn.send(MetadataRequest([]))
    except (aio_errors.SaslAuthenticationFailed, aio_errors.AuthenticationFailedError) as exc:
        raise _auth_error(address, s) from exc
    except (aio_errors.IllegalSaslStateError, aio_errors.UnsupportedSaslMechanismError) as exc:
        raise _mechanism_error(address, s) from exc
    except ssl.SSLError as exc:
        raise _tls_error(address, s, str(exc)) from exc
    except ConnectionRefusedError as exc:
        raise KafkaUnavailableError(f"cannot reach Kafka at {address}: connection refused") from exc
    except (aio_errors.KafkaConnectionError, ConnectionError) as exc:
        raise _mismatch_error(address, s) from exc
    except TimeoutError as exc:
        if s.uses_tls:  # a TLS client waiting on a plaintext listener
            raise _mismatch_error(address, s) from exc
        raise KafkaUnavailableError(
            f"Kafka at {address} did not answer within {timeout_s:g} s ({s.describe()})"
        ) from exc
    except OSError as exc:
        raise KafkaUnavailableError(f"cannot reach Kafka at {address}: {exc}") from exc
    finally:
        closed = conn.close()
        # A transport (there is one once ``_protocol`` is set) closes
        # asynchronously: wait, so no socket outlives the caller's event loop.
        if getattr(conn, "_protocol", None) is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(closed), 2)


def _auth_error(address: str, s: KafkaSecuritySettings) -> KafkaAuthError:
    return KafkaAuthError(
        f"Kafka at {address} rejected the credentials of user {s.username!r} "
        f"({s.mechanism}): check LEADFLOW_KAFKA_USERNAME and LEADFLOW_KAFKA_PASSWORD"
    )


def _mechanism_error(address: str, s: KafkaSecuritySettings) -> KafkaProtocolMismatchError:
    return KafkaProtocolMismatchError(
        f"Kafka at {address} does not accept SASL {s.mechanism} on this listener: check "
        f"LEADFLOW_KAFKA_SECURITY_PROTOCOL={s.security_protocol} and "
        "LEADFLOW_KAFKA_SASL_MECHANISM against the broker's listener"
    )


def _tls_error(address: str, s: KafkaSecuritySettings, detail: str) -> KafkaSecurityError:
    low = detail.lower()
    if not s.uses_tls or "plaintext broker listener" in low:
        return _mismatch_error(address, s)
    if "certificate verify failed" in low or "unable to get local issuer" in low:
        why = (
            "its certificate is not signed by a trusted CA "
            f"(LEADFLOW_KAFKA_CA_FILE={s.ca_file or '(system trust store)'})"
        )
        if "hostname" in low or "ip address mismatch" in low:
            why = "its certificate does not name this host (LEADFLOW_KAFKA_SSL_CHECK_HOSTNAME)"
        return KafkaTlsError(f"TLS handshake with Kafka at {address} failed: {why}")
    return KafkaTlsError(
        f"TLS handshake with Kafka at {address} failed ({s.describe()}): {detail.strip()}"
    )


def _mismatch_error(address: str, s: KafkaSecuritySettings) -> KafkaProtocolMismatchError:
    if not s.uses_tls:
        hint = "a TLS or SASL listener needs SSL, SASL_SSL or SASL_PLAINTEXT"
    elif not s.uses_sasl:
        hint = "a SASL listener needs SASL_SSL with a user and password"
    else:
        hint = "a plaintext listener needs PLAINTEXT or SASL_PLAINTEXT"
    return KafkaProtocolMismatchError(
        f"Kafka at {address} dropped the connection during the handshake: the listener "
        f"expects another security protocol than LEADFLOW_KAFKA_SECURITY_PROTOCOL="
        f"{s.security_protocol} ({hint})"
    )
