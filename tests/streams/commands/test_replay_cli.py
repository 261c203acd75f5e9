"""``leadflow replay`` through click, against the real broker and Postgres."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.admin import ensure_topics
from streams.commands import replay as command
from streams.lag import group_lag
from streams.replay import CONSUMER_GROUP_COMMAND, GroupActiveError, read_rollback
from streams.settings import Settings
from streams.topics import by_name

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_times_are_iso_8601_or_a_duration_ago() -> None:
    assert command.parse_when("2026-11-30T09:15:00Z") == datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
    assert command.parse_when("2026-11-30T09:15") == datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
    assert command.parse_when("2026-11-30T10:15:00+01:00").astimezone(UTC).hour == 9
    assert command.parse_when("1d12h", now=NOW) == NOW - timedelta(days=1, hours=12)
    with pytest.raises(click.BadParameter, match="neither an ISO 8601 time"):
        command.parse_when("yesterday")


def test_offsets_are_one_number_or_partition_pairs() -> None:
    assert command.parse_offsets(()) is None
    assert command.parse_offsets(("120",)) == 120
    assert command.parse_offsets(("0:120, 3:400", "5:7")) == {0: 120, 3: 400, 5: 7}
    with pytest.raises(click.BadParameter, match="not both"):
        command.parse_offsets(("4", "1:2"))
    with pytest.raises(click.BadParameter, match="given twice"):
        command.parse_offsets(("1:2,1:3",))
    with pytest.raises(click.BadParameter, match="is not an offset"):
        command.parse_offsets(("p1:2",))


@pytest.fixture
def cli(
    isolated: tuple[Settings, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, CliRunner]:
    """The command wired to settings with a topic prefix of their own."""
    settings = isolated[0]
    ensure_topics(settings, (by_name("raw"),))
    monkeypatch.setattr(command, "get_settings", lambda: settings)
    return settings, CliRunner()


def _invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(command.replay, list(args), catch_exceptions=True)


def _produce(settings: Settings, partition: int, n: int) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for i in range(n):
        producer.produce(
            settings.topic_name("raw"), key=b"k%d" % i, value=b"v", partition=partition
        )
    assert producer.flush(10) == 0


def _committed(settings: Settings, group: str) -> dict[int, int | None]:
    rows = group_lag(settings.bootstrap_servers, group, [settings.topic_name("raw")])
    return {r.partition: r.committed for r in rows}


def test_usage_mistakes_are_reported_before_anything_runs(
    cli: tuple[Settings, CliRunner],
) -> None:
    _, runner = cli
    for args, message in [
        ((), "give a TOPIC to replay, or --restore FILE"),
        (("raw", "--reset-group", "--target", "enriched"), "--target is for copying"),
        (("raw", "--group", "g"), "--group and --rollback-file go with --reset-group"),
        (("raw", "--from-offset", "x"), "Invalid value for '--from-offset'"),
        (("raw", "--to-time", "soon"), "neither an ISO 8601 time"),
        (("--restore", __file__, "--from-offset", "0"), "--restore takes only"),
        (("raw", "--kafka-tool"), "--kafka-tool takes no other arguments"),
    ]:
        result = _invoke(runner, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
    unknown = _invoke(runner, "nope")
    assert "unknown topic 'nope'" in str(unknown.exception)


def test_copy_dry_run_then_execute(cli: tuple[Settings, CliRunner]) -> None:
    settings, runner = cli
    _produce(settings, 2, 4)
    dry = _invoke(runner, "raw", "--partition", "2", "--from-offset", "1")
    assert dry.exit_code == 0, dry.output
    lines = dry.output.splitlines()
    assert lines[0] == f"replay raw -> {settings.topic_name('raw')}: copy records (dry run)"
    assert lines[2].split() == ["2", "1", "4", "3"]
    assert "add --execute to copy 3 record(s)" in dry.output
    assert group_lag(settings.bootstrap_servers, "x", [settings.topic_name("raw")])[2].end == 4

    done = _invoke(runner, "raw", "--partition", "2", "--from-offset", "1", "--execute")
    assert done.exit_code == 0, done.output
    assert f"copied 3 record(s) to {settings.topic_name('raw')}" in done.output
    assert group_lag(settings.bootstrap_servers, "x", [settings.topic_name("raw")])[2].end == 7


def test_reset_and_restore_through_the_command(
    cli: tuple[Settings, CliRunner], tmp_path: Path
) -> None:
    settings, runner = cli
    _produce(settings, 0, 5)
    group = f"cli-replay-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group})
    consumer.commit(offsets=[TopicPartition(settings.topic_name("raw"), 0, 5)], asynchronous=False)
    consumer.close()
    rollback = tmp_path / "rb.json"
    args = ["raw", "--reset-group", "--group", group, "--from-offset", "0:2"]

    dry = _invoke(runner, *args)
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines()[2].split() == ["0", "5", "2", "5", "3"]
    assert "stop the workers, then add --execute" in dry.output
    assert _committed(settings, group)[0] == 5

    done = _invoke(runner, *args, "--execute", "--rollback-file", str(rollback))
    assert done.exit_code == 0, done.output
    assert f"rollback file: {rollback.resolve()}" in done.output
    assert f"leadflow replay --restore {rollback.resolve()} --execute" in done.output
    assert _committed(settings, group)[0] == 2
    assert read_rollback(rollback)[1] == {(settings.topic_name("raw"), 0): 5}

    undo = _invoke(
        runner, "--restore", str(rollback), "--execute", "--rollback-file", str(tmp_path / "u")
    )
    assert undo.exit_code == 0, undo.output
    assert undo.output.splitlines()[2].split() == [settings.topic_name("raw"), "0", "2", "5"]
    assert _committed(settings, group)[0] == 5


def test_reset_of_a_live_group_is_refused(cli: tuple[Settings, CliRunner]) -> None:
    settings, runner = cli
    _produce(settings, 0, 1)
    group = f"cli-live-{uuid.uuid4().hex[:6]}"
    member = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group})
    try:
        member.subscribe([settings.topic_name("raw")])
        for _ in range(100):
            if member.assignment():
                break
            member.poll(0.2)
        result = _invoke(runner, "raw", "--reset-group", "--group", group, "--execute")
    finally:
        member.close()
    assert isinstance(result.exception, GroupActiveError)
    assert "has 1 live member(s); stop every worker" in str(result.exception)


def test_kafka_tool_writes_kafka_consumer_groups_sh(cli: tuple[Settings, CliRunner]) -> None:
    settings, runner = cli
    result = _invoke(runner, "--kafka-tool")
    assert result.exit_code == 0, result.output
    script = Path(result.output.strip())
    assert script.name == "kafka-consumer-groups.sh"
    assert CONSUMER_GROUP_COMMAND in script.read_text()
    group = f"cli-tool-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group})
    consumer.commit(offsets=[TopicPartition(settings.topic_name("raw"), 0, 0)], asynchronous=False)
    consumer.close()
    listed = subprocess.run(
        [str(script), "--bootstrap-server", settings.bootstrap_servers, "--list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert group in listed.stdout.split()
