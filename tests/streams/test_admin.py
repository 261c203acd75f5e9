"""Topic creation and drift checks against the live broker."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

from confluent_kafka.cimpl import NewTopic

from streams.admin import admin_client, check_topics, ensure_topics
from streams.settings import Settings
from streams.topics import CATALOG, by_name


def _leadflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ensure_creates_every_catalog_topic_once(settings: Settings) -> None:
    s = replace(settings, topic_prefix=settings.topic_prefix + "ens-")
    created = ensure_topics(s)
    assert sorted(created) == sorted(spec.full_name(s) for spec in CATALOG)
    assert ensure_topics(s) == []
    assert check_topics(s) == []
    meta = admin_client(s).list_topics(timeout=10)
    assert len(meta.topics[s.topic_name("raw")].partitions) == 8


def test_check_reports_missing_and_wrong_partition_count(settings: Settings) -> None:
    s = replace(settings, topic_prefix=settings.topic_prefix + "drift-")
    wrong = by_name("sent").full_name(s)
    admin = admin_client(s)  # keep a reference: the futures die with the client
    futures = admin.create_topics([NewTopic(wrong, num_partitions=3, replication_factor=1)])
    futures[wrong].result()
    deadline = time.monotonic() + 10  # creation is acknowledged before metadata shows it
    while wrong not in admin.list_topics(timeout=5).topics and time.monotonic() < deadline:
        time.sleep(0.1)
    drift = {(d.topic, d.problem) for d in check_topics(s)}
    assert (s.topic_name("raw"), "missing") in drift
    assert (wrong, "has 3 partitions, catalog says 8") in drift
    assert (wrong, "retention.ms is 604800000, catalog says 2592000000") in drift


def test_topics_check_cli_against_live_broker(subprocess_env: dict[str, str]) -> None:
    env = {
        **subprocess_env,
        "LEADFLOW_TOPIC_PREFIX": subprocess_env["LEADFLOW_TOPIC_PREFIX"] + "cli-",
    }
    before = _leadflow(env, "topics", "--check")
    assert before.returncode == 1
    assert "drift: " in before.stdout and "missing" in before.stdout
    made = _leadflow(env, "topics")
    assert made.returncode == 0, made.stderr
    assert f"{len(CATALOG)} created" in made.stdout
    after = _leadflow(env, "topics", "--check")
    assert after.returncode == 0, after.stdout + after.stderr
    assert f"ok: {len(CATALOG)} topics match the catalog" in after.stdout
