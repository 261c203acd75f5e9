"""I4 and the table-partition check against the real broker; the result table."""

from __future__ import annotations

from confluent_kafka import Producer

from chaos.invariants import check_lag, check_table_partitions
from chaos.lab import ScenarioResult, lines_of
from streams.admin import ensure_topics
from streams.invariants import Check
from streams.settings import Settings


async def test_lag_is_zero_on_empty_topics_and_counts_stuck_partitions(
    isolated: tuple[Settings, dict[str, str]],
) -> None:
    settings, _ = isolated
    ensure_topics(settings)
    ok = await check_lag(settings, bound_s=2, poll_s=0.2)
    assert ok.ok and ok.count == 0, ok.line()

    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for topic, partition in (("raw", 0), ("raw", 3), ("touch-due", 3)):
        producer.produce(settings.topic_name(topic), key=b"k", value=b"v", partition=partition)
    assert producer.flush(10) == 0
    stuck = await check_lag(settings, bound_s=1, poll_s=0.2)
    assert not stuck.ok and stuck.count == 3, stuck.line()
    assert "enrich[3] 1 (never committed)" in stuck.detail
    assert "send[3]" in stuck.detail


def test_a_lead_on_two_changelog_partitions_is_found(
    isolated: tuple[Settings, dict[str, str]],
) -> None:
    settings, _ = isolated
    ensure_topics(settings)
    topic = settings.topic_name("leadflow-lead-state-changelog")
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    producer.produce(topic, key=b"c1\x1fsplit", value=b"x", partition=1)
    producer.produce(topic, key=b"c1\x1fsplit", value=b"y", partition=5)
    producer.produce(topic, key=b"c1\x1fwhole", value=b"z", partition=2)
    producer.produce(topic, key=b"c2\x1fother", value=b"z", partition=6)
    assert producer.flush(10) == 0
    check = check_table_partitions(settings, "c1", timeout_s=15)
    assert (check.ok, check.count) == (False, 1), check.line()
    assert "split" in check.detail and "of 2" in check.detail


def test_the_table_has_a_column_per_invariant() -> None:
    checks = [
        Check(name, name != "I2", 3 if name == "I2" else 0, "")
        for name in ("I1", "I2", "I3", "I4", "I5", "W", "DL")
    ]
    row = ScenarioResult("worker kill -9", ["worker 0 kill -9"] * 3, checks, leads=200)
    table = lines_of([row, ScenarioResult("redrive", [], [], skipped="not wired")])
    assert table[0].split()[:4] == ["scenario", "faults", "injected", "I1"]
    assert "3x worker 0 kill -9" in table[1]
    assert "FAIL 3" in table[1] and "DL pass 0" in table[1]
    assert "skipped: not wired" in table[2]
    assert not row.ok
