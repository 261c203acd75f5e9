"""Kafka security settings: parsing, validation, and the config each client library gets."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from pathlib import Path

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.errors import ConfigError, KafkaUnavailableError, LeadflowError, TransientError
from streams.infra.process import free_port
from streams.infra.tls import CertificateAuthority, make_ca
from streams.kafka_config import (
    KafkaAuthError,
    KafkaProtocolMismatchError,
    KafkaSecurityError,
    KafkaSecuritySettings,
    KafkaTlsError,
    aiokafka_kwargs,
    confluent_config,
    faust_credentials,
    ssl_context,
    wait_for_connection,
)
from streams.settings import Settings, settings_table


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


def sasl_ssl_env(ca_file: Path | str, **extra: str) -> dict[str, str]:
    return {
        "LEADFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LEADFLOW_KAFKA_USERNAME": "leadflow-app",
        "LEADFLOW_KAFKA_PASSWORD": "s3cret-pw",
        "LEADFLOW_KAFKA_CA_FILE": str(ca_file),
        **extra,
    }


def test_plaintext_default_adds_nothing_to_any_client() -> None:
    s = KafkaSecuritySettings.from_env({})
    assert s.security_protocol == "PLAINTEXT"
    assert confluent_config(s) == {}
    assert aiokafka_kwargs(s) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(s) is None
    assert ssl_context(s) is None


def test_sasl_ssl_confluent_config(ca: CertificateAuthority) -> None:
    s = KafkaSecuritySettings.from_env(sasl_ssl_env(ca.cert))
    assert confluent_config(s) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",  # the default mechanism
        "sasl.username": "leadflow-app",
        "sasl.password": "s3cret-pw",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(ca.cert),
    }


def test_sasl_ssl_aiokafka_kwargs_verify_the_broker(ca: CertificateAuthority) -> None:
    s = KafkaSecuritySettings.from_env(sasl_ssl_env(ca.cert))
    kwargs = aiokafka_kwargs(s)
    ctx = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "leadflow-app",
        "sasl_plain_password": "s3cret-pw",
    }
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert len(ctx.get_ca_certs()) == 1  # exactly the configured CA, not the system store


def test_faust_credentials_become_the_same_aiokafka_settings(ca: CertificateAuthority) -> None:
    s = KafkaSecuritySettings.from_env(
        sasl_ssl_env(ca.cert, LEADFLOW_KAFKA_SASL_MECHANISM="scram-sha-256")
    )
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert auth["sasl_plain_username"] == "leadflow-app"
    assert auth["sasl_plain_password"] == "s3cret-pw"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_ssl_only_and_no_hostname_check(ca: CertificateAuthority) -> None:
    s = KafkaSecuritySettings.from_env(
        {
            "LEADFLOW_KAFKA_SECURITY_PROTOCOL": "ssl",
            "LEADFLOW_KAFKA_CA_FILE": str(ca.cert),
            "LEADFLOW_KAFKA_SSL_CHECK_HOSTNAME": "false",
        }
    )
    assert confluent_config(s) == {
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "none",
        "ssl.ca.location": str(ca.cert),
    }
    ctx = ssl_context(s)
    assert ctx is not None and not ctx.check_hostname
    creds = faust_credentials(s)
    assert isinstance(creds, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(creds)["security_protocol"] == "SSL"


def test_sasl_plaintext_has_no_tls(ca: CertificateAuthority) -> None:
    s = KafkaSecuritySettings.from_env(
        {
            "LEADFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "LEADFLOW_KAFKA_USERNAME": "u",
            "LEADFLOW_KAFKA_PASSWORD": "p",
            "LEADFLOW_KAFKA_SASL_MECHANISM": "PLAIN",
        }
    )
    assert confluent_config(s) == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "u",
        "sasl.password": "p",
    }
    assert "ssl_context" not in aiokafka_kwargs(s)
    assert credentials_to_aiokafka_auth(faust_credentials(s))["security_protocol"] == (
        "SASL_PLAINTEXT"
    )


def test_mutual_tls_client_certificate(ca: CertificateAuthority, tmp_path: Path) -> None:
    client = ca.issue(tmp_path, "client")
    s = KafkaSecuritySettings.from_env(
        sasl_ssl_env(
            ca.cert,
            LEADFLOW_KAFKA_CERT_FILE=str(client.cert),
            LEADFLOW_KAFKA_KEY_FILE=str(client.key),
        )
    )
    conf = confluent_config(s)
    assert conf["ssl.certificate.location"] == str(client.cert)
    assert conf["ssl.key.location"] == str(client.key)
    assert ssl_context(s) is not None  # the key pair loads


def test_password_is_never_shown(ca: CertificateAuthority) -> None:
    s = KafkaSecuritySettings.from_env(sasl_ssl_env(ca.cert))
    assert "s3cret-pw" not in repr(s)
    assert "s3cret-pw" not in s.describe()
    assert s.describe() == f"SASL_SSL, SCRAM-SHA-512 as user 'leadflow-app', CA {ca.cert}"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"LEADFLOW_KAFKA_SECURITY_PROTOCOL": "SASL-SSL"}, ["'SASL-SSL' is not one of"]),
        (
            {"LEADFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            ["needs LEADFLOW_KAFKA_USERNAME and LEADFLOW_KAFKA_PASSWORD"],
        ),
        (
            {
                "LEADFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "LEADFLOW_KAFKA_USERNAME": "u",
                "LEADFLOW_KAFKA_PASSWORD": "p",
                "LEADFLOW_KAFKA_SASL_MECHANISM": "GSSAPI",
            },
            ["LEADFLOW_KAFKA_SASL_MECHANISM='GSSAPI' is not one of"],
        ),
        (
            {"LEADFLOW_KAFKA_USERNAME": "u", "LEADFLOW_KAFKA_PASSWORD": "p"},
            ["LEADFLOW_KAFKA_USERNAME, LEADFLOW_KAFKA_PASSWORD set", "does not use SASL"],
        ),
        (
            {"LEADFLOW_KAFKA_CA_FILE": "/etc/hostname"},
            ["LEADFLOW_KAFKA_CA_FILE set", "PROTOCOL=PLAINTEXT does not use TLS"],
        ),
        (
            {"LEADFLOW_KAFKA_SECURITY_PROTOCOL": "SSL", "LEADFLOW_KAFKA_CA_FILE": "/no/ca.pem"},
            ["LEADFLOW_KAFKA_CA_FILE=/no/ca.pem: no such file"],
        ),
        (
            {
                "LEADFLOW_KAFKA_SECURITY_PROTOCOL": "SSL",
                "LEADFLOW_KAFKA_CERT_FILE": "/etc/hostname",
            },
            ["LEADFLOW_KAFKA_CERT_FILE and LEADFLOW_KAFKA_KEY_FILE go together"],
        ),
        (
            {"LEADFLOW_KAFKA_SSL_CHECK_HOSTNAME": "maybe"},
            ["LEADFLOW_KAFKA_SSL_CHECK_HOSTNAME='maybe' is not a valid bool"],
        ),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        KafkaSecuritySettings.from_env(env)
    for name in names:
        assert name in str(info.value)


def test_unreadable_key_is_a_config_error(ca: CertificateAuthority, tmp_path: Path) -> None:
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("not a key\n")
    s = KafkaSecuritySettings.from_env(
        sasl_ssl_env(
            ca.cert, LEADFLOW_KAFKA_CERT_FILE=str(ca.cert), LEADFLOW_KAFKA_KEY_FILE=str(not_a_key)
        )
    )
    with pytest.raises(ConfigError, match="cannot load Kafka TLS files"):
        ssl_context(s)


def test_security_errors_are_config_errors_not_transient() -> None:
    # A stage retries TransientError for ever; a wrong password never heals.
    for cls in (KafkaAuthError, KafkaTlsError, KafkaProtocolMismatchError):
        assert issubclass(cls, KafkaSecurityError)
        assert issubclass(cls, ConfigError) and issubclass(cls, LeadflowError)
        assert not issubclass(cls, TransientError)
    assert issubclass(KafkaUnavailableError, TransientError)


def test_every_variable_is_documented() -> None:
    rows = {env: (default, doc) for env, default, doc in settings_table(KafkaSecuritySettings)}
    assert set(rows) == {
        "LEADFLOW_KAFKA_SECURITY_PROTOCOL",
        "LEADFLOW_KAFKA_SASL_MECHANISM",
        "LEADFLOW_KAFKA_USERNAME",
        "LEADFLOW_KAFKA_PASSWORD",
        "LEADFLOW_KAFKA_CA_FILE",
        "LEADFLOW_KAFKA_CERT_FILE",
        "LEADFLOW_KAFKA_KEY_FILE",
        "LEADFLOW_KAFKA_KEY_PASSWORD",
        "LEADFLOW_KAFKA_SSL_CHECK_HOSTNAME",
    }
    assert rows["LEADFLOW_KAFKA_SECURITY_PROTOCOL"][0] == "PLAINTEXT"
    assert all(doc for _, doc in rows.values())


# --- waiting for Kafka at a worker's start --------------------------------------------


def test_wait_for_connection_gives_up_after_the_wait_saying_each_retry() -> None:
    said: list[str] = []
    started = time.monotonic()
    with pytest.raises(KafkaUnavailableError, match=r"gave up after 2 s"):
        wait_for_connection(2, said.append, bootstrap=f"127.0.0.1:{free_port()}", attempt_s=0.5)
    assert time.monotonic() - started >= 2
    assert len(said) >= 2
    assert all("retrying for up to" in line for line in said)


def _relay_after(delay_s: float, port: int, to: tuple[str, int], stop: threading.Event) -> None:
    """After ``delay_s``, accept on ``port`` and pipe each connection to ``to``."""

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    time.sleep(delay_s)
    opened: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", port)) as server:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(to)
            opened += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()
    for sock in opened:
        sock.close()


def test_wait_for_connection_finds_a_broker_that_comes_up_meanwhile(settings: Settings) -> None:
    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    relay_port, stop, said = free_port(), threading.Event(), list[str]()
    relay = threading.Thread(
        target=_relay_after, args=(1.5, relay_port, (host, int(port)), stop), daemon=True
    )
    relay.start()
    try:
        brokers = wait_for_connection(
            30, said.append, bootstrap=f"127.0.0.1:{relay_port}", attempt_s=0.5
        )
    finally:
        stop.set()
        relay.join(5)
    assert brokers >= 1
    assert said  # it was down at first, and said so
