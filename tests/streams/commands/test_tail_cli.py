"""``leadflow tail`` as a command: options, JSON lines, Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import select
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from streams.admin import ensure_topics
from streams.codec import AvroCodec
from streams.commands.tail import tail
from streams.errors import ConfigError
from streams.settings import REPO_ROOT, Settings
from streams.topics import by_name

RAW = AvroCodec("leadflow.RawLead")


def lead(i: int) -> bytes:
    return RAW.encode(
        {
            "campaign_id": "tail-cli",
            "lead_id": f"lead-{i}",
            "first_name": "Ana",
            "email": f"ana{i}@example.com",
            "phone": "+14155550123",
            "attributes": {},
            "event_time": datetime(2026, 11, 26, tzinfo=UTC),
        }
    )


def produce(settings: Settings, rows: list[tuple[int, bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for partition, key, value in rows:
        producer.produce(settings.topic_name("raw"), key=key, value=value, partition=partition)
    assert producer.flush(15) == 0


@pytest.fixture(scope="module")
def seeded(services: Any) -> Settings:
    """A raw topic of its own (2 partitions): leads 0-3 and one undecodable record."""
    base: Settings = services.settings
    settings = dataclasses.replace(
        base, topic_prefix=f"{base.topic_prefix}tailcli{uuid.uuid4().hex[:6]}-", topic_partitions=2
    )
    ensure_topics(settings, (by_name("raw"),))
    produce(settings, [(i % 2, f"lead-{i}".encode(), lead(i)) for i in range(4)])
    produce(settings, [(1, b"junk", b"\x00\x00\x00\x00\x01junk")])
    return settings


def run(settings: Settings, *args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(tail, list(args), obj=settings)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_json_lines_masked_by_default(seeded: Settings) -> None:
    lines = run(seeded, "raw", "--from-beginning", "--exit-at-end")
    assert len(lines) == 5
    good = [r for r in lines if "value" in r]
    assert {r["value"]["email"] for r in good} == {"a***@example.com"}
    assert {r["value"]["phone"] for r in good} == {"+1***0123"}
    assert {r["value"]["first_name"] for r in good} == {"A***"}
    assert all(
        set(r) >= {"topic", "partition", "offset", "timestamp", "key", "schema"} for r in good
    )
    assert datetime.fromisoformat(good[0]["timestamp"]).tzinfo is not None
    [bad] = [r for r in lines if "error" in r]
    assert bad["key"] == "junk" and bad["error_reason"] == "not_avro"
    assert bad["raw"] == "AAAAAAFqdW5r"  # base64 of the bytes
    assert "Confluent wire format" in bad["error"]


def test_show_pii_key_partition_and_max(seeded: Settings) -> None:
    [one] = run(seeded, "raw", "--from-beginning", "--exit-at-end", "--key", "lead-2", "--show-pii")
    assert one["value"]["email"] == "ana2@example.com"
    assert one["value"]["phone"] == "+14155550123"
    odd = run(seeded, "raw", "--from-beginning", "--exit-at-end", "-p", "1")
    assert sorted(r["key"] for r in odd) == ["junk", "lead-1", "lead-3"]
    both = run(seeded, "raw", "--from-beginning", "--exit-at-end", "--partition", "0,1")
    assert len(both) == 5
    repeated = run(seeded, "raw", "--from-beginning", "--exit-at-end", "-p", "0", "-p", "1")
    assert len(repeated) == 5
    assert len(run(seeded, "raw", "--from-beginning", "--max", "3")) == 3


def test_from_time_in_the_future_reads_nothing(seeded: Settings) -> None:
    assert run(seeded, "raw", "--from-time", "2999-01-01T00:00:00Z", "--exit-at-end") == []
    assert len(run(seeded, "raw", "--from-time", "0", "--exit-at-end")) == 5


def test_bad_options(seeded: Settings) -> None:
    runner = CliRunner()
    both = runner.invoke(tail, ["raw", "--from-beginning", "--from-time", "0"], obj=seeded)
    assert both.exit_code == 2 and "not both" in both.output
    unknown = runner.invoke(tail, ["nope"], obj=seeded)
    assert unknown.exit_code == 2 and "dead-letter" in unknown.output
    bad = runner.invoke(tail, ["raw", "-p", "x"], obj=seeded)
    assert isinstance(bad.exception, ConfigError)
    zero = runner.invoke(tail, ["raw", "--max", "0"], obj=seeded)
    assert zero.exit_code == 2


def test_follows_until_ctrl_c_then_exits_cleanly(
    seeded: Settings, subprocess_env: dict[str, str]
) -> None:
    env = {**subprocess_env, "LEADFLOW_TOPIC_PREFIX": seeded.topic_prefix}
    code = "import sys; from streams.commands.tail import tail; tail.main(sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "raw"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        while not line and time.monotonic() < deadline:
            # It follows from the end: keep producing until a record shows up.
            produce(seeded, [(0, b"lead-new", lead(9))])
            if select.select([proc.stdout], [], [], 1.0)[0]:
                line = proc.stdout.readline()
        assert json.loads(line)["key"] == "lead-new"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "stopped after" in stderr and "Traceback" not in stderr
