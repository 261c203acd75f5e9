"""A second, throwaway KRaft broker with a SASL_SSL listener (SCRAM), for security tests.

It runs from the same Maven jars as :class:`~streams.infra.kafka.LocalKafka`
but shares nothing else with it: its own free ports, its own data folder
(given by the caller, usually a pytest tmp path), a small heap. SCRAM users
are written into the cluster metadata when the storage is formatted
(``kafka-storage format --add-scram``); TLS uses a PKCS#12 keystore made
from a certificate the caller issued (see :mod:`streams.infra.tls`).

The broker is a child process in its own process group; :meth:`SecureKafka.stop`
(or leaving the ``with`` block) kills the group, so nothing outlives the test.
The project's main broker is never touched.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from streams.errors import ConfigError, LeadflowError, ServiceStartError
from streams.infra.kafka import LocalKafka
from streams.infra.process import free_port, port_open, require_tool, tail
from streams.infra.tls import IssuedCertificate, pkcs12_keystore
from streams.kafka_config import KafkaSecuritySettings, check_connection
from streams.settings import Settings

__all__ = ["SecureKafka"]

#: The broker's own user for its (single-node) inter-broker listener.
_ADMIN = "leadflow-admin"
_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


class SecureKafka:
    """Start, probe and stop a single-node broker whose client listener is SASL_SSL.

    ``users`` maps SCRAM-SHA-512 user names to passwords (letters, digits,
    ``._-`` only: they pass through the storage tool's argument syntax).
    """

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        certificate: IssuedCertificate,
        users: Mapping[str, str],
        *,
        heap_mb: int = 320,
        start_timeout_s: float = 90.0,
    ) -> None:
        for name, password in users.items():
            if not (_SAFE.match(name) and _SAFE.match(password)):
                raise ConfigError(f"SCRAM user {name!r}: use only letters, digits and ._-")
        self.local = LocalKafka(settings)
        self.workdir = workdir
        self.certificate = certificate
        self.users = dict(users)
        self.heap_mb = heap_mb
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.log_file = workdir / "server.log"
        self.stdout_file = workdir / "kafka.out"
        self._admin_password = secrets.token_hex(12)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Bootstrap address of the SASL_SSL listener."""
        return f"127.0.0.1:{self.port}"

    def client_security(self, username: str, password: str) -> KafkaSecuritySettings:
        """Client settings for ``username`` that trust this broker's CA."""
        return KafkaSecuritySettings(
            security_protocol="SASL_SSL",
            username=username,
            password=password,
            ca_file=str(self.certificate.ca),
        )

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """Format storage with the SCRAM users, start the broker, wait until it serves."""
        java = require_tool(
            "java", "install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)"
        )
        self.local.fetch_jars()
        self.workdir.mkdir(parents=True, exist_ok=True)
        props, log4j = self._write_config()
        self._format(java, props, log4j)
        cmd = [
            java, f"-Xms{self.heap_mb}m", f"-Xmx{self.heap_mb}m",
            "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp", f"{self.local.libs_dir}/*", "kafka.Kafka", str(props),
        ]  # fmt: skip
        with self.stdout_file.open("ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the broker's process group (SIGTERM, SIGKILL after 10 s) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> SecureKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals -------------------------------------------------------------
    def _write_config(self) -> tuple[Path, Path]:
        keystore_password = secrets.token_hex(12)
        keystore = pkcs12_keystore(self.certificate, self.workdir / "broker.p12", keystore_password)
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{_ADMIN}" password="{self._admin_password}";'
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"SASL_SSL://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "SASL_SSL",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(keystore),
            "ssl.keystore.password": keystore_password,
            "ssl.key.password": keystore_password,
            # The broker is its own inter-broker client: it must trust its CA.
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.certificate.ca),
            "ssl.client.auth": "none",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "1",
            "num.io.threads": "1",
            "background.threads": "2",
            "log.cleaner.enable": "false",
        }
        props_file = self.workdir / "server.properties"
        props_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        props_file.chmod(0o600)  # it holds the keystore and admin passwords
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(_LOG4J2.format(log=self.log_file))
        return props_file, log4j

    def _format(self, java: str, props: Path, log4j: Path) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        users = {_ADMIN: self._admin_password, **self.users}
        scram = [
            arg
            for name, password in users.items()
            for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")
        ]
        cmd = [
            java, "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{self.local.libs_dir}/*",
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), *scram,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServiceStartError(
                "secure Kafka storage format failed: " + (proc.stderr or proc.stdout).strip()[-500:]
            )

    def _wait_ready(self) -> None:
        admin = self.client_security(_ADMIN, self._admin_password)
        deadline = time.monotonic() + self.start_timeout_s
        last: LeadflowError | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise ServiceStartError(
                    f"secure Kafka exited during start-up. Last log lines:\n{self._log_tail()}"
                )
            if port_open(self.port):
                try:
                    check_connection(self.address, admin, timeout_s=3)
                except LeadflowError as exc:
                    last = exc
                else:
                    return
            time.sleep(0.3)
        raise ServiceStartError(
            f"secure Kafka did not answer at {self.address} within {self.start_timeout_s:.0f} s "
            f"(last error: {last}). Last log lines:\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        return tail(self.log_file) or tail(self.stdout_file) or "(no log output)"
