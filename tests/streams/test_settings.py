"""Settings come from the environment, with defaults and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.commands.config import all_settings_rows, markdown
from streams.errors import ConfigError
from streams.settings import REPO_ROOT, Settings, settings_table


def test_defaults_without_environment() -> None:
    s = Settings.from_env({})
    assert s.kafka_port == 9092
    assert s.pg_port == 5432
    assert s.topic_partitions == 8
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.dsn == "postgresql://leadflow@127.0.0.1:5432/leadflow"
    assert not s.uses_external_kafka
    assert not s.uses_external_database


def test_environment_overrides_and_types() -> None:
    s = Settings.from_env(
        {
            "LEADFLOW_KAFKA_BOOTSTRAP": "broker:29092",
            "LEADFLOW_TOPIC_PARTITIONS": "3",
            "LEADFLOW_TIME_SCALE": "3600",
            "LEADFLOW_HOME": "/srv/lf",
            "LEADFLOW_TOPIC_PREFIX": "x-",
        }
    )
    assert s.bootstrap_servers == "broker:29092"
    assert s.uses_external_kafka
    assert s.topic_partitions == 3
    assert s.time_scale == 3600.0
    assert s.home == Path("/srv/lf")
    assert s.topic_name("raw") == "x-raw"


def test_empty_value_keeps_default() -> None:
    assert Settings.from_env({"LEADFLOW_KAFKA_PORT": ""}).kafka_port == 9092


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LEADFLOW_KAFKA_PORT": "ninety"}, "LEADFLOW_KAFKA_PORT='ninety' is not a valid int"),
        ({"LEADFLOW_PG_PORT": "70000"}, "LEADFLOW_PG_PORT=70000 is not a TCP port"),
        ({"LEADFLOW_TOPIC_PARTITIONS": "0"}, "LEADFLOW_TOPIC_PARTITIONS=0 must be >= 1"),
        ({"LEADFLOW_TIME_SCALE": "-1"}, "LEADFLOW_TIME_SCALE=-1.0 must be > 0"),
        ({"LEADFLOW_SHUTDOWN_DRAIN_S": "-1"}, "LEADFLOW_SHUTDOWN_DRAIN_S=-1.0 must be >= 0"),
        ({"LEADFLOW_RETRY_BACKOFF_MAX_S": "0"}, "LEADFLOW_RETRY_BACKOFF_MAX_S=0.0 must be >= 0.2"),
        (
            {"LEADFLOW_STOP_TIMEOUT_S": "5", "LEADFLOW_SHUTDOWN_DRAIN_S": "10"},
            "LEADFLOW_STOP_TIMEOUT_S=5.0 must be 0 (no bound) or more than",
        ),
        ({"LEADFLOW_KAFKA_START_WAIT_S": "-2"}, "LEADFLOW_KAFKA_START_WAIT_S=-2.0 must be >= 0"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert needle in str(info.value)


def test_every_setting_is_documented_in_configuration_md() -> None:
    doc = (REPO_ROOT / "docs" / "CONFIGURATION.md").read_text()
    assert markdown() in doc, "docs/CONFIGURATION.md is stale: run `make docs`"
    names = [row[0] for _, rows in all_settings_rows() for row in rows]
    assert len(names) == len(set(names)), "two settings share an environment variable"
    assert all(name.startswith("LEADFLOW_") for name in names)
    assert {row[0] for row in settings_table()} <= set(names)
