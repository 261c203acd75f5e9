"""leadflow against a broker whose only client listener is SASL_SSL (SCRAM-SHA-512).

A second, throwaway KRaft broker (:class:`streams.infra.secure_kafka.SecureKafka`)
runs for this module on free ports, with TLS material from a certificate
authority made here. With the right user, password and CA, records round-trip
through confluent-kafka, aiokafka and Faust's producer; a wrong password,
a plaintext client, a client that does not trust the CA and a host name
the certificate does not name are each refused with a one-line error that
says which. The main broker on 9092 is not used.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as RdTopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams import kafka_config
from streams.infra.process import port_open
from streams.infra.secure_kafka import SecureKafka
from streams.infra.tls import CertificateAuthority, IssuedCertificate, make_ca
from streams.kafka_config import (
    KafkaAuthError,
    KafkaProtocolMismatchError,
    KafkaSecuritySettings,
    KafkaTlsError,
    aiokafka_kwargs,
    check_connection,
    check_connection_async,
    confluent_config,
    faust_credentials,
)
from streams.lag import group_lag
from streams.settings import Settings
from streams.topic_reader import read_to_end

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER = "leadflow-app"
PASSWORD = f"pw-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Tls:
    """The test's CA, the broker's certificate, and a CA the broker has nothing to do with."""

    ca: CertificateAuthority
    broker: IssuedCertificate
    other_ca: CertificateAuthority


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    folder = tmp_path_factory.mktemp("tls")
    ca = make_ca(folder / "ca")
    # Valid for 127.0.0.1 only, so "localhost" is a host name it does not name.
    broker = ca.issue(folder / "broker", "broker", hosts=("127.0.0.1",))
    return Tls(ca, broker, make_ca(folder / "other", "other CA"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[SecureKafka]:
    kafka = SecureKafka(
        Settings.from_env(), tmp_path_factory.mktemp("secure-kafka"), tls.broker, {USER: PASSWORD}
    )
    with kafka:
        yield kafka
    assert not port_open(kafka.port), "the secure broker still listens after stop()"


@pytest.fixture
def good(broker: SecureKafka) -> KafkaSecuritySettings:
    return broker.client_security(USER, PASSWORD)


@pytest.fixture
def topic(broker: SecureKafka, good: KafkaSecuritySettings) -> str:
    name = f"secure-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": broker.address, **confluent_config(good)})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(15)
    return name


# --- the right credentials ------------------------------------------------------
def test_check_connection_succeeds_with_the_right_credentials(
    broker: SecureKafka, good: KafkaSecuritySettings
) -> None:
    assert check_connection(broker.address, good, timeout_s=10) == 1
    asyncio.run(check_connection_async(broker.address, good, timeout_s=10))


def test_confluent_kafka_round_trip(
    broker: SecureKafka, good: KafkaSecuritySettings, topic: str
) -> None:
    producer = Producer({"bootstrap.servers": broker.address, **confluent_config(good)})
    producer.produce(topic, key=b"lead-1", value=b"over SASL_SSL")
    assert producer.flush(15) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": broker.address,
            "group.id": f"g-{uuid.uuid4().hex[:6]}",
            **confluent_config(good),
        }
    )
    try:
        consumer.assign([RdTopicPartition(topic, 0, 0)])
        msg = consumer.poll(15)
        assert msg is not None and msg.error() is None
        assert (msg.key(), msg.value()) == (b"lead-1", b"over SASL_SSL")
    finally:
        consumer.close()


async def test_aiokafka_round_trip(
    broker: SecureKafka, good: KafkaSecuritySettings, topic: str
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.address, **aiokafka_kwargs(good))
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, key=b"lead-2", value=b"aiokafka")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.address, **aiokafka_kwargs(good))
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        record = await asyncio.wait_for(consumer.getone(), 15)
        assert (record.key, record.value) == (b"lead-2", b"aiokafka")
    finally:
        await consumer.stop()


async def test_faust_app_round_trip(
    broker: SecureKafka, good: KafkaSecuritySettings, topic: str
) -> None:
    app = faust.App(
        f"secure-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{broker.address}",
        broker_credentials=faust_credentials(good),
        web_enabled=False,
        store="memory://",
        topic_allow_declare=False,
    )
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == USER
    channel = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    received: asyncio.Future[tuple[bytes, bytes]] = asyncio.get_running_loop().create_future()

    @app.agent(channel)
    async def collect(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            if not received.done():
                received.set_result((event.key, event.value))

    await app.start()
    try:
        await channel.send(key=b"lead-3", value=b"faust")  # through Faust's producer
        assert await asyncio.wait_for(received, 30) == (b"lead-3", b"faust")
    finally:
        await app.stop()


def test_leadflow_readers_use_the_configured_security(
    broker: SecureKafka,
    good: KafkaSecuritySettings,
    topic: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = Producer({"bootstrap.servers": broker.address, **confluent_config(good)})
    producer.produce(topic, key=b"lead-4", value=b"read me")
    assert producer.flush(15) == 0
    # What get_kafka_security() would have loaded from the environment.
    monkeypatch.setattr(kafka_config, "_cached", good)
    assert dict(read_to_end(broker.address, topic, timeout_s=15))[b"lead-4"] == b"read me"
    (row,) = group_lag(broker.address, "nobody", [topic])
    assert row.end >= 1 and row.committed is None


def test_leadflow_cli_creates_topics_and_round_trips_over_sasl_ssl(
    broker: SecureKafka, good: KafkaSecuritySettings, tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "LEADFLOW_HOME": str(tmp_path),
        "LEADFLOW_KAFKA_BOOTSTRAP": broker.address,
        "LEADFLOW_TOPIC_PREFIX": f"cli{uuid.uuid4().hex[:6]}-",
        "LEADFLOW_TOPIC_PARTITIONS": "1",
        "LEADFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LEADFLOW_KAFKA_USERNAME": USER,
        "LEADFLOW_KAFKA_PASSWORD": PASSWORD,
        "LEADFLOW_KAFKA_CA_FILE": good.ca_file,
    }
    for args in (["topics"], ["topics", "--check"], ["smoke"]):
        proc = subprocess.run(
            [sys.executable, "-m", "streams.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"leadflow {' '.join(args)}: {proc.stderr[-800:]}"
    assert "round-tripped" in proc.stdout
    assert PASSWORD not in proc.stdout + proc.stderr


# --- refusals -------------------------------------------------------------------
def test_wrong_password_is_a_clear_auth_error(
    broker: SecureKafka, good: KafkaSecuritySettings
) -> None:
    wrong = dataclasses.replace(good, password="not-the-password")
    with pytest.raises(KafkaAuthError) as rd:
        check_connection(broker.address, wrong, timeout_s=10)
    with pytest.raises(KafkaAuthError) as aio:
        asyncio.run(check_connection_async(broker.address, wrong, timeout_s=10))
    for err in (rd.value, aio.value):
        message = str(err)
        assert "rejected the credentials of user 'leadflow-app'" in message
        assert "LEADFLOW_KAFKA_PASSWORD" in message
        assert "not-the-password" not in message and "\n" not in message
        assert err.reason == "kafka_auth"


def test_plaintext_client_is_a_clear_protocol_mismatch(broker: SecureKafka) -> None:
    plaintext = KafkaSecuritySettings()
    with pytest.raises(KafkaProtocolMismatchError) as rd:
        check_connection(broker.address, plaintext, timeout_s=10)
    with pytest.raises(KafkaProtocolMismatchError) as aio:
        asyncio.run(check_connection_async(broker.address, plaintext, timeout_s=10))
    for err in (rd.value, aio.value):
        assert "LEADFLOW_KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in str(err)
        assert "dropped the connection during the handshake" in str(err)


def test_tls_without_sasl_is_a_clear_protocol_mismatch(
    broker: SecureKafka, good: KafkaSecuritySettings
) -> None:
    tls_only = KafkaSecuritySettings(security_protocol="SSL", ca_file=good.ca_file)
    with pytest.raises(KafkaProtocolMismatchError, match="SASL listener needs SASL_SSL"):
        check_connection(broker.address, tls_only, timeout_s=10)
    with pytest.raises(KafkaProtocolMismatchError, match="SASL listener needs SASL_SSL"):
        asyncio.run(check_connection_async(broker.address, tls_only, timeout_s=10))


def test_client_not_trusting_the_ca_is_a_clear_tls_error(
    broker: SecureKafka, good: KafkaSecuritySettings, tls: Tls
) -> None:
    distrust = dataclasses.replace(good, ca_file=str(tls.other_ca.cert))
    with pytest.raises(KafkaTlsError) as rd:
        check_connection(broker.address, distrust, timeout_s=10)
    with pytest.raises(KafkaTlsError) as aio:
        asyncio.run(check_connection_async(broker.address, distrust, timeout_s=10))
    for err in (rd.value, aio.value):
        assert "certificate is not signed by a trusted CA" in str(err)
        assert str(tls.other_ca.cert) in str(err)


def test_certificate_for_another_host_is_a_clear_tls_error(
    broker: SecureKafka, good: KafkaSecuritySettings
) -> None:
    by_name = f"localhost:{broker.port}"
    with pytest.raises(KafkaTlsError, match="does not name this host") as rd:
        check_connection(by_name, good, timeout_s=10)
    with pytest.raises(KafkaTlsError, match="does not name this host"):
        asyncio.run(check_connection_async(by_name, good, timeout_s=10))
    assert "LEADFLOW_KAFKA_SSL_CHECK_HOSTNAME" in str(rd.value)
    # Turning the check off (only for a known test setup) lets it through.
    relaxed = dataclasses.replace(good, check_hostname=False)
    assert check_connection(by_name, relaxed, timeout_s=10) == 1
