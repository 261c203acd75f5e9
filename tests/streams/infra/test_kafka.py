"""The local Kafka broker: version pin, clear errors, and reuse of a running broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import PortInUseError, ToolMissingError
from streams.infra.kafka import LocalKafka, kafka_version
from streams.infra.process import port_open
from streams.settings import Settings


def test_version_is_pinned_4x() -> None:
    version = kafka_version()
    assert version.split(".")[0] == "4"


def test_port_taken_by_another_program_names_the_override(tmp_path: Path, held_port: int) -> None:
    s = Settings.from_env({"LEADFLOW_HOME": str(tmp_path), "LEADFLOW_KAFKA_PORT": str(held_port)})
    with pytest.raises(PortInUseError) as info:
        LocalKafka(s).up()
    message = str(info.value)
    assert f"port {held_port} is already in use" in message
    assert "LEADFLOW_KAFKA_PORT" in message
    assert "LEADFLOW_KAFKA_BOOTSTRAP" in message


def test_java_missing_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    s = Settings.from_env(
        {
            "LEADFLOW_HOME": str(tmp_path),
            "LEADFLOW_KAFKA_PORT": "1",
            "LEADFLOW_KAFKA_CONTROLLER_PORT": "2",
        }
    )
    with pytest.raises(ToolMissingError) as info:
        LocalKafka(s).up()
    assert "'java' was not found on PATH" in str(info.value)


def test_external_cluster_starts_nothing(tmp_path: Path) -> None:
    s = Settings.from_env(
        {"LEADFLOW_HOME": str(tmp_path), "LEADFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    )
    result = LocalKafka(s).up()
    assert "started nothing" in result
    assert not (tmp_path / "kafka").exists()


def test_running_broker_is_reused(settings: Settings) -> None:
    base = Settings.from_env()
    if base.uses_external_kafka:
        pytest.skip("external cluster configured")
    kafka = LocalKafka(base)
    pid = kafka.pid()
    assert pid is not None
    assert "reusing it" in kafka.up()
    assert kafka.pid() == pid
    status = kafka.status()
    assert status.running
    assert port_open(base.kafka_port)
