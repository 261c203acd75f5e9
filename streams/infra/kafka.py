"""A single-node Apache Kafka broker (KRaft, broker+controller) from Maven jars.

No Docker and no tarball: the broker's runtime classpath is resolved from
Maven Central with ``mvn dependency:copy-dependencies`` through the small pom
in ``infra/kafka/pom.xml`` (which pins the Kafka version) and cached outside
git in ``$LEADFLOW_CACHE_DIR/kafka-<version>/libs``. Data and logs live in
``$LEADFLOW_HOME/kafka``.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from streams.errors import InfraError, PortInUseError, ServiceStartError
from streams.infra.process import (
    ServiceStatus,
    pid_alive,
    port_open,
    read_pid,
    require_tool,
    stop_pid,
    tail,
)
from streams.settings import REPO_ROOT, Settings

__all__ = ["LocalKafka", "kafka_version"]

POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
_MARKER = "kafka.Kafka"


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version pinned in the pom's ``kafka.version`` property."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)  # noqa: S314
    if node is None or not node.text:
        raise InfraError(f"{pom} has no <kafka.version> property")
    return node.text.strip()


_LOG4J2 = """\
status = warn
name = leadflow-kafka
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


class LocalKafka:
    """Fetch, format, start, stop and report the project's local broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = kafka_version()
        self.dir = settings.home_dir / "kafka"
        self.data_dir = self.dir / "data"
        self.log_dir = self.dir / "logs"
        self.log_file = self.log_dir / "server.log"
        self.stdout_file = self.log_dir / "kafka.out"
        self.pid_file = self.dir / "kafka.pid"
        self.props_file = self.dir / "server.properties"
        self.log4j_file = self.dir / "log4j2.properties"
        self.libs_dir = settings.cache_path / f"kafka-{self.version}" / "libs"

    # --- jars ------------------------------------------------------------------
    def jars_cached(self) -> bool:
        """True when the broker classpath is already in the cache."""
        return (self.libs_dir / ".complete").exists()

    def fetch_jars(self) -> bool:
        """Resolve the broker classpath with Maven unless cached. True if fetched now."""
        if self.jars_cached():
            return False
        mvn = require_tool(
            "mvn", "install Apache Maven (Debian: apt-get install maven) to fetch Kafka's jars"
        )
        tmp = self.libs_dir.with_name("libs.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            out = (proc.stdout + proc.stderr).strip().splitlines()[-10:]
            raise InfraError(
                f"Maven could not fetch Kafka {self.version} jars (exit {proc.returncode}): "
                + " | ".join(out)
            )
        (tmp / ".complete").write_text(self.version + "\n")
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        tmp.rename(self.libs_dir)
        return True

    # --- lifecycle -------------------------------------------------------------
    @property
    def address(self) -> str:
        """Bootstrap address of this broker."""
        return f"127.0.0.1:{self.settings.kafka_port}"

    def pid(self) -> int | None:
        """pid of our running broker, or None."""
        pid = read_pid(self.pid_file)
        return pid if pid_alive(pid, _MARKER) else None

    def status(self) -> ServiceStatus:
        """Whether our broker runs and answers."""
        if self.settings.uses_external_kafka:
            return ServiceStatus(
                "kafka",
                port_open_any(self.settings.kafka_bootstrap),
                self.settings.kafka_bootstrap,
                "external (LEADFLOW_KAFKA_BOOTSTRAP)",
                managed=False,
            )
        pid = self.pid()
        answering = pid is not None and port_open(self.settings.kafka_port)
        detail = f"Kafka {self.version}, logs {self.log_file}"
        return ServiceStatus("kafka", answering, self.address, detail, pid)

    def up(self) -> str:
        """Start the broker unless it runs already. Returns what was done."""
        if self.settings.uses_external_kafka:
            return f"using external Kafka at {self.settings.kafka_bootstrap}; started nothing"
        if self.pid() is not None:
            self._wait_ready(time.monotonic() + self.settings.kafka_start_timeout_s)
            return f"Kafka already running at {self.address} (pid {self.pid()}); reusing it"
        for port, var in (
            (self.settings.kafka_port, "LEADFLOW_KAFKA_PORT"),
            (self.settings.kafka_controller_port, "LEADFLOW_KAFKA_CONTROLLER_PORT"),
        ):
            if port_open(port):
                raise PortInUseError(
                    f"port {port} is already in use by another program, so the local Kafka "
                    f"broker cannot start; set {var} to a free port, or "
                    "LEADFLOW_KAFKA_BOOTSTRAP=host:port to use that cluster instead"
                )
        java = require_tool(
            "java", "install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)"
        )
        fetched = self.fetch_jars()
        self._write_config()
        self._format_storage(java)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        heap = f"{self.settings.kafka_heap_mb}m"
        cmd = [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            f"{self.libs_dir}/*",
            _MARKER,
            str(self.props_file),
        ]
        pid = _spawn_detached(cmd, self.stdout_file, self.dir)
        self.pid_file.write_text(f"{pid}\n")
        try:
            self._wait_ready(time.monotonic() + self.settings.kafka_start_timeout_s, pid)
        except ServiceStartError:
            stop_pid(pid, timeout=10)
            self.pid_file.unlink(missing_ok=True)
            raise
        how = "fetched jars, " if fetched else ""
        return (
            f"Kafka {self.version} started at {self.address} (pid {pid}; {how}logs {self.log_file})"
        )

    def down(self) -> str:
        """Stop our broker (SIGTERM, then SIGKILL after 30 s)."""
        if self.settings.uses_external_kafka:
            return "external Kafka configured; nothing to stop"
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return "Kafka was not running"
        stopped = stop_pid(pid, timeout=30)
        self.pid_file.unlink(missing_ok=True)
        return f"Kafka stopped (pid {pid})" if stopped else f"Kafka pid {pid} did not stop"

    # --- internals -------------------------------------------------------------
    def _write_config(self) -> None:
        s = self.settings
        self.dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{s.kafka_controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{s.kafka_port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": str(s.topic_partitions),
            # Topics come from leadflow's catalog (`leadflow topics`), never by accident.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "16",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.check.interval.ms": "60000",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        self.props_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.log4j_file.write_text(_LOG4J2.format(log=self.log_file))

    def _format_storage(self, java: str) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = [
            java,
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            "-cp",
            f"{self.libs_dir}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.props_file),
            "--ignore-formatted",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServiceStartError(
                "Kafka storage format failed: " + (proc.stderr or proc.stdout).strip()[-500:]
            )

    def _wait_ready(self, deadline: float, pid: int | None = None) -> None:
        while time.monotonic() < deadline:
            if pid is not None and not pid_alive(pid, _MARKER):
                raise ServiceStartError(
                    "Kafka exited during start-up. "
                    f"Last log lines ({self.log_file}):\n{self._log_tail()}"
                )
            if (
                port_open(self.settings.kafka_port)
                and _broker_answers(self.address)
                and _group_coordinator_answers(self.address)
            ):
                return
            time.sleep(0.5)
        raise ServiceStartError(
            f"Kafka did not answer at {self.address} within "
            f"{self.settings.kafka_start_timeout_s:.0f} s (LEADFLOW_KAFKA_START_TIMEOUT_S). "
            f"Last log lines ({self.log_file}):\n{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        text = tail(self.log_file) or tail(self.stdout_file)
        return text or "(no log output)"


def _spawn_detached(cmd: list[str], log: Path, cwd: Path) -> int:
    """Start ``cmd`` as a daemon (its own session, reparented to init); return its pid.

    A shell starts it in the background and exits at once, so no child of
    ours outlives this call: the broker is meant to outlive the command.
    """
    proc = subprocess.run(
        ["sh", "-c", 'exec "$@" >>"$LEADFLOW_LOG" 2>&1 </dev/null & echo $!', "sh", *cmd],
        env={**os.environ, "LEADFLOW_LOG": str(log)},
        cwd=cwd,
        capture_output=True,
        text=True,
        start_new_session=True,
        check=False,
    )
    if proc.returncode != 0 or not proc.stdout.strip().isdigit():
        raise ServiceStartError(f"could not start Kafka: {proc.stderr.strip()[-300:]}")
    return int(proc.stdout.strip())


def port_open_any(bootstrap: str) -> bool:
    """True when the first reachable host:port of a bootstrap list accepts TCP."""
    for hostport in bootstrap.split(","):
        host, _, port = hostport.strip().rpartition(":")
        if host and port.isdigit() and port_open(int(port), host.strip("[]"), timeout=2):
            return True
    return False


def _group_coordinator_answers(address: str) -> bool:
    """True when the broker answers a consumer group's committed-offsets request.

    On a fresh broker the first group request creates ``__consumer_offsets``
    and can take 20 s or more; asking here, in a loop of short timeouts,
    makes ``infra up`` wait for that instead of the first lag read or
    ``leadflow health`` after it. A consumer (closed synchronously) asks:
    an admin client dropped with a request in flight can crash the process.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": address, "group.id": "leadflow-infra-ready", "log_level": 0}
    )
    try:
        consumer.committed([TopicPartition("leadflow-infra-ready", 0)], timeout=3)
    except Exception:  # any failure here means "not ready yet"
        return False
    finally:
        consumer.close()
    return True


def _broker_answers(address: str) -> bool:
    """True when the broker returns cluster metadata (it is really serving)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": address, "log_level": 0})
    try:
        meta = admin.list_topics(timeout=3)
    except Exception:  # any failure here means "not ready yet"
        return False
    return bool(meta.brokers)
