"""Replays and offset resets on the real broker, with the send ledger in Postgres."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from sinks.campaigns import CampaignStore
from streams.admin import ensure_topics
from streams.campaign import load_campaign
from streams.codec import AvroCodec
from streams.lag import group_lag
from streams.replay import (
    REPLAYED_FROM_HEADER,
    GroupActiveError,
    PartitionPlan,
    ReplayError,
    ReplayReport,
    RollbackFileError,
    Selection,
    SendCounts,
    copy_range,
    kafka_tool_command,
    read_rollback,
    reset_group,
    restore,
)
from streams.schema_examples import example_record
from streams.schemas import default_registry
from streams.settings import REPO_ROOT, Settings
from streams.topics import by_name

# --- helpers -------------------------------------------------------------------------------


def _record(full_name: str, lead: str, campaign: str, **fields: Any) -> bytes:
    codec = AvroCodec(full_name)
    rec = example_record(default_registry().current(full_name), lead)
    return codec.encode({**rec, "campaign_id": campaign, **fields})


def _topics(settings: Settings, *names: str) -> None:
    ensure_topics(settings, tuple(by_name(n) for n in names))


def _produce(
    settings: Settings,
    topic: str,
    records: list[tuple[int, bytes, bytes]],
    *,
    timestamp_ms: int | None = None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    errors: list[object] = []
    for partition, key, value in records:
        extra: dict[str, Any] = {} if timestamp_ms is None else {"timestamp": timestamp_ms}
        producer.produce(
            settings.topic_name(topic),
            key=key,
            value=value,
            partition=partition,
            headers=headers,
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
            **extra,
        )
    assert producer.flush(10) == 0
    assert errors == []


def _ends(settings: Settings, topic: str) -> dict[int, int]:
    return {
        r.partition: r.end
        for r in group_lag(settings.bootstrap_servers, "nobody", [settings.topic_name(topic)])
    }


def _committed(settings: Settings, group: str, topic: str) -> dict[int, int | None]:
    return {
        r.partition: r.committed
        for r in group_lag(settings.bootstrap_servers, group, [settings.topic_name(topic)])
    }


def _commit(settings: Settings, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group})
    try:
        consumer.commit(
            offsets=[TopicPartition(settings.topic_name(topic), p, o) for p, o in offsets.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()


def _campaign(dsn: str) -> str:
    campaign = replace(
        load_campaign(REPO_ROOT / "examples" / "campaign.yaml"), id=f"rp-{uuid.uuid4().hex[:8]}"
    )
    CampaignStore(dsn).create(campaign)  # 4 touches
    return campaign.id


def _lead(dsn: str, campaign: str, lead: str, state: str, touch: int) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO leads (campaign_id, lead_id, state, touch) VALUES (%s, %s, %s, %s)",
            (campaign, lead, state, touch),
        )


def _ledger(dsn: str, campaign: str, lead: str, touch: int, status: str = "accepted") -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO send_ledger (campaign_id, lead_id, touch, channel, idempotency_key, "
            "status) VALUES (%s, %s, %s, 'sms', %s, %s)",
            (campaign, lead, touch, uuid.uuid4().hex, status),
        )


def _read_all(settings: Settings, topic: str, partition: int, start: int) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": settings.bootstrap_servers, "group.id": uuid.uuid4().hex}
    )
    name = settings.topic_name(topic)
    end = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)[1]
    consumer.assign([TopicPartition(name, partition, start)])
    out: list[Any] = []
    deadline = time.monotonic() + 15
    try:
        while len(out) < end - start and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg)
    finally:
        consumer.close()
    return out


# --- selections and reports ----------------------------------------------------------------


def test_a_selection_names_a_catalog_topic_and_one_kind_of_bound() -> None:
    with pytest.raises(ReplayError, match="unknown topic 'touch_due'"):
        Selection("touch_due")
    with pytest.raises(ReplayError, match="offset or a time, not both"):
        Selection("sent", from_offsets=3, from_time=datetime.now(UTC))
    with pytest.raises(ReplayError, match="offsets must be 0 or more"):
        Selection("sent", to_offsets={1: -2})
    assert Selection("sent").wanted_partitions(range(4)) == [0, 1, 2, 3]
    assert Selection("sent", from_offsets={2: 5}, to_offsets={3: 9}).wanted_partitions(
        range(4)
    ) == [2, 3]
    assert Selection("sent", partitions=(1,)).wanted_partitions(range(4)) == [1]
    with pytest.raises(ReplayError, match=r"partitions 0\.\.3, not \[7\]"):
        Selection("sent", partitions=(7,)).wanted_partitions(range(4))
    with pytest.raises(ReplayError, match=r"outside --partition"):
        Selection("sent", partitions=(1,), from_offsets={2: 0}).wanted_partitions(range(4))


def test_the_report_is_a_table_with_totals_and_a_legend() -> None:
    plans = [
        PartitionPlan(0, 2, 5, 0, 5, records=3, sends=SendCounts(done=2, no_send=1)),
        PartitionPlan(1, 0, 0, 0, 0, records=0, sends=SendCounts()),
    ]
    lines = ReplayReport("copy", "touch-due", False, plans, "p-touch-due").lines()
    assert lines[0] == "replay touch-due -> p-touch-due: copy records (dry run)"
    header = "partition from to records done moved-on may-send no-send"
    assert lines[1].split() == header.split()
    assert lines[2].split() == ["0", "2", "5", "3", "2", "0", "0", "1"]
    assert lines[4].split() == ["total", "3", "2", "0", "0", "1"]
    assert lines[5].split()[:2] == ["done:", "in"]  # the legend
    assert any(line.startswith("dry run: nothing was changed") for line in lines)


def test_a_bad_rollback_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("{not json")
    with pytest.raises(RollbackFileError, match="is not JSON"):
        read_rollback(path)
    path.write_text(json.dumps({"kind": "something-else", "version": 1}))
    with pytest.raises(RollbackFileError, match="not a leadflow replay rollback file"):
        read_rollback(path)
    doc = {
        "kind": "leadflow-replay-rollback",
        "version": 1,
        "group": "g",
        "offsets": [{"topic": "t", "partition": 0, "offset": -5}],
    }
    path.write_text(json.dumps(doc))
    with pytest.raises(RollbackFileError, match="bad offset entry"):
        read_rollback(path)


# --- copy mode -------------------------------------------------------------------------------


def test_dry_run_counts_sends_from_the_ledger_and_changes_nothing(
    isolated: tuple[Settings, dict[str, str]], dsn: str
) -> None:
    settings = isolated[0]
    _topics(settings, "touch-due")
    c = _campaign(dsn)
    _ledger(dsn, c, "l1", 1)  # touch 1 of l1 went out
    _lead(dsn, c, "l1", "in_sequence", 2)
    _lead(dsn, c, "l2", "in_sequence", 2)  # touch 2 not sent yet
    _lead(dsn, c, "l3", "completed", 4)  # ended without a row for touch 3
    due = "leadflow.TouchDue"
    _produce(
        settings,
        "touch-due",
        [
            (0, b"l1", _record(due, "l1", c, touch=1)),
            (0, b"l2", _record(due, "l2", c, touch=2)),
            (1, b"l3", _record(due, "l3", c, touch=3)),
            (1, b"l9", _record(due, "l9", "no-such-campaign", touch=1)),
            (1, b"bad", b"not avro"),
        ],
    )
    before = _ends(settings, "touch-due")

    report = copy_range(settings, Selection("touch-due"))

    assert _ends(settings, "touch-due") == before  # a dry run writes nothing
    by_partition = {p.partition: p for p in report.partitions}
    assert len(by_partition) == settings.topic_partitions
    assert (by_partition[0].records, by_partition[1].records) == (2, 3)
    assert by_partition[0].sends == SendCounts(done=1, may_send=1)
    assert by_partition[1].sends == SendCounts(moved_on=1, no_send=2)
    assert report.send_totals() == SendCounts(done=1, moved_on=1, may_send=1, no_send=2)
    assert not report.executed and all(p.copied == 0 for p in report.partitions)


def test_scored_and_sent_records_count_the_send_they_lead_to(
    isolated: tuple[Settings, dict[str, str]], dsn: str
) -> None:
    settings = isolated[0]
    _topics(settings, "scored", "sent")
    c = _campaign(dsn)
    _ledger(dsn, c, "a", 1)
    _ledger(dsn, c, "a", 2)
    _lead(dsn, c, "a", "in_sequence", 3)
    _lead(dsn, c, "b", "in_sequence", 2)
    scored = "leadflow.ScoredLead"
    _produce(
        settings,
        "scored",
        [
            (0, b"a", _record(scored, "a", c, qualified=True)),  # touch 1 is in the ledger
            (0, b"c", _record(scored, "c", c, qualified=True)),  # a new lead: touch 1 may go
            (0, b"d", _record(scored, "d", c, qualified=False)),  # never sent
        ],
    )
    sent = "leadflow.TouchSent"
    _produce(
        settings,
        "sent",
        [
            (2, b"a", _record(sent, "a", c, touch=1, status="accepted")),  # touch 2: done
            (2, b"b", _record(sent, "b", c, touch=1, status="accepted")),  # touch 2: may send
            (2, b"a", _record(sent, "a", c, touch=4, status="accepted")),  # last touch
            (2, b"b", _record(sent, "b", c, touch=1, status="ambiguous")),  # reconcile's
        ],
    )
    assert copy_range(settings, Selection("scored")).send_totals() == SendCounts(
        done=1, may_send=1, no_send=1
    )
    assert copy_range(settings, Selection("sent", partitions=(2,))).send_totals() == SendCounts(
        done=1, may_send=1, no_send=2
    )


def test_execute_copies_a_range_with_key_value_and_headers_to_the_same_partition(
    isolated: tuple[Settings, dict[str, str]], dsn: str
) -> None:
    settings = isolated[0]
    _topics(settings, "touch-due")
    c = _campaign(dsn)
    due = "leadflow.TouchDue"
    records = [(3, f"k{i}".encode(), _record(due, f"k{i}", c, touch=1)) for i in range(6)]
    _produce(settings, "touch-due", records, headers=[("x-leadflow-attempt", b"2")])
    _produce(settings, "touch-due", [(5, b"other", _record(due, "other", c, touch=1))])

    report = copy_range(
        settings, Selection("touch-due", from_offsets={3: 2}, to_offsets={3: 5}), execute=True
    )

    assert [(p.partition, p.start, p.end, p.records, p.copied) for p in report.partitions] == [
        (3, 2, 5, 3, 3)
    ]
    copies = _read_all(settings, "touch-due", 3, 6)
    assert [(m.key(), m.value()) for m in copies] == [(k, v) for _, k, v in records[2:5]]
    name = settings.topic_name("touch-due")
    assert [dict(m.headers()) for m in copies] == [
        {"x-leadflow-attempt": b"2", REPLAYED_FROM_HEADER: f"{name}:3:{o}".encode()}
        for o in (2, 3, 4)
    ]
    assert _ends(settings, "touch-due")[5] == 1  # other partitions untouched
    assert any(line == f"copied 3 record(s) to {name}" for line in report.lines())


def test_a_time_range_uses_broker_timestamps_with_an_exclusive_end(
    isolated: tuple[Settings, dict[str, str]],
) -> None:
    settings = isolated[0]
    _topics(settings, "raw")
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    for minute, n in ((0, 2), (10, 3), (20, 4)):
        at = int((t0 + timedelta(minutes=minute)).timestamp() * 1000)
        _produce(settings, "raw", [(0, b"k", b"v")] * n, timestamp_ms=at)

    report = copy_range(
        settings,
        Selection(
            "raw",
            partitions=(0,),
            from_time=t0 + timedelta(minutes=5),
            to_time=t0 + timedelta(minutes=20),
        ),
    )
    [p] = report.partitions
    assert (p.start, p.end, p.records) == (2, 5, 3)
    assert p.sends is None  # raw records carry no send
    later = copy_range(settings, Selection("raw", partitions=(0,), from_time=t0 + timedelta(1)))
    assert (later.partitions[0].start, later.partitions[0].records) == (9, 0)


# --- group resets -------------------------------------------------------------------------------


def test_reset_writes_a_rollback_first_and_restore_puts_offsets_back(
    isolated: tuple[Settings, dict[str, str]], dsn: str, tmp_path: Path
) -> None:
    settings = isolated[0]
    _topics(settings, "touch-due")
    c = _campaign(dsn)
    _ledger(dsn, c, "x", 1)
    due = "leadflow.TouchDue"
    _produce(settings, "touch-due", [(0, b"x", _record(due, "x", c, touch=1))] * 5)
    _produce(settings, "touch-due", [(1, b"y", _record(due, "y", c, touch=1))] * 3)
    group = f"replay-test-{uuid.uuid4().hex[:6]}"
    _commit(settings, group, "touch-due", {0: 5, 1: 3})
    before = _committed(settings, group, "touch-due")

    dry = reset_group(settings, Selection("touch-due", from_offsets=1), group=group)
    assert _committed(settings, group, "touch-due") == before
    by_partition = {p.partition: p for p in dry.partitions}
    assert (by_partition[0].committed, by_partition[0].new_offset, by_partition[0].records) == (
        5,
        1,
        4,
    )
    assert by_partition[0].sends == SendCounts(done=4)
    assert by_partition[2].committed is None and by_partition[2].records == 0

    rollback = tmp_path / "rollback.json"
    done = reset_group(
        settings,
        Selection("touch-due", from_offsets=1, partitions=(0, 1)),
        group=group,
        execute=True,
        rollback_file=rollback,
    )
    assert done.rollback_file == rollback.resolve()
    assert read_rollback(rollback) == (
        group,
        {(settings.topic_name("touch-due"), 0): 5, (settings.topic_name("touch-due"), 1): 3},
    )
    after = _committed(settings, group, "touch-due")
    assert (after[0], after[1], after[2]) == (1, 1, None)
    with pytest.raises(RollbackFileError, match="never overwritten"):
        reset_group(
            settings,
            Selection("touch-due", from_offsets=0, partitions=(0,)),
            group=group,
            execute=True,
            rollback_file=rollback,
        )
    assert _committed(settings, group, "touch-due")[0] == 1  # nothing moved without a rollback

    dry_restore = restore(settings, rollback)
    assert _committed(settings, group, "touch-due")[0] == 1
    assert [(m[1], m[2], m[3]) for m in dry_restore.moves] == [(0, 1, 5), (1, 1, 3)]
    second = tmp_path / "undo-undo.json"
    restored = restore(settings, rollback, execute=True, rollback_file=second)
    assert _committed(settings, group, "touch-due") == before
    assert read_rollback(second)[1] == {
        (settings.topic_name("touch-due"), 0): 1,
        (settings.topic_name("touch-due"), 1): 1,
    }
    assert restored.rollback_file == second.resolve()


def test_a_partition_never_committed_is_restored_to_the_log_start(
    isolated: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings = isolated[0]
    _topics(settings, "raw")
    _produce(settings, "raw", [(4, b"k", b"v")] * 3)
    group = f"replay-test-{uuid.uuid4().hex[:6]}"
    rollback = tmp_path / "r.json"
    reset_group(
        settings,
        Selection("raw", from_offsets={4: 2}),
        group=group,
        execute=True,
        rollback_file=rollback,
    )
    assert read_rollback(rollback)[1] == {(settings.topic_name("raw"), 4): None}
    assert _committed(settings, group, "raw")[4] == 2
    restore(settings, rollback, execute=True, rollback_file=tmp_path / "r2.json")
    assert _committed(settings, group, "raw")[4] == 0


def test_a_group_with_live_members_is_never_reset(
    isolated: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings = isolated[0]
    _topics(settings, "raw")
    _produce(settings, "raw", [(0, b"k", b"v")] * 2)
    group = f"replay-live-{uuid.uuid4().hex[:6]}"
    _commit(settings, group, "raw", {0: 2})
    rollback = tmp_path / "r.json"
    member = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    try:
        member.subscribe([settings.topic_name("raw")])
        deadline = time.monotonic() + 20
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.2)
        assert member.assignment()
        dry = reset_group(settings, Selection("raw", from_offsets=0), group=group)
        assert dry.live_members == 1
        assert f"warning: group {group} has 1 live member(s); --execute refuses" in "\n".join(
            dry.lines()
        )
        with pytest.raises(GroupActiveError, match=f"group {group} has 1 live member"):
            reset_group(
                settings,
                Selection("raw", from_offsets=0),
                group=group,
                execute=True,
                rollback_file=rollback,
            )
        assert not rollback.exists()
        rollback.write_text(
            json.dumps(
                {
                    "kind": "leadflow-replay-rollback",
                    "version": 1,
                    "group": group,
                    "offsets": [{"topic": settings.topic_name("raw"), "partition": 0, "offset": 0}],
                }
            )
        )
        with pytest.raises(GroupActiveError):
            restore(settings, rollback, execute=True, rollback_file=tmp_path / "r2.json")
    finally:
        member.close()
    assert not (tmp_path / "r2.json").exists()
    assert _committed(settings, group, "raw")[0] == 2


def test_kafka_consumer_groups_tool_resets_our_groups(
    isolated: tuple[Settings, dict[str, str]],
) -> None:
    """Kafka's own kafka-consumer-groups works on a leadflow group, and lag agrees."""
    settings = isolated[0]
    _topics(settings, "touch-due")
    topic = settings.topic_name("touch-due")
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    for minute in (0, 10, 20):
        at = int((t0 + timedelta(minutes=minute)).timestamp() * 1000)
        _produce(settings, "touch-due", [(0, b"k", b"v"), (1, b"k", b"v")], timestamp_ms=at)
    group = settings.topic_name("leadflow")  # what the worker's group is called
    _commit(settings, group, "touch-due", {0: 3, 1: 3})
    tool = [*kafka_tool_command(settings), "--bootstrap-server", settings.bootstrap_servers]

    def run(*args: str) -> str:
        proc = subprocess.run(
            [*tool, "--group", group, *args], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    to_time = (t0 + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    planned = run("--topic", f"{topic}:0", "--reset-offsets", "--to-datetime", to_time, "--dry-run")
    assert _committed(settings, group, "touch-due")[0] == 3  # a dry run moves nothing
    assert any(line.split()[2:4] == ["0", "1"] for line in planned.splitlines()[1:]), planned
    run("--topic", f"{topic}:0", "--reset-offsets", "--to-datetime", to_time, "--execute")
    lag = {r.partition: r for r in group_lag(settings.bootstrap_servers, group, [topic])}
    assert (lag[0].committed, lag[0].lag) == (1, 2)
    assert (lag[1].committed, lag[1].lag) == (3, 0)
    # ... and what it reports is what ours reads.
    described = run("--describe")
    rows = [line.split() for line in described.splitlines() if line.startswith(group)]
    assert sorted((int(r[2]), int(r[3]), int(r[5])) for r in rows if r[1] == topic) == [
        (0, 1, 2),
        (1, 3, 0),
    ]


def test_a_range_ending_in_a_transaction_marker_is_read_to_its_end(
    isolated: tuple[Settings, dict[str, str]],
) -> None:
    """A transactional producer leaves a commit marker at the end: no record at end - 1."""
    settings = isolated[0]
    _topics(settings, "inbound")
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "transactional.id": f"replay-test-{uuid.uuid4().hex[:6]}",
        }
    )
    producer.init_transactions(10)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(settings.topic_name("inbound"), key=b"k", value=b"v%d" % i, partition=6)
    producer.commit_transaction(10)
    # The commit marker reaches the partition a moment after commit_transaction
    # returns; until then the last stable offset, the end a reader sees, is 0.
    _wait_for_stable_end(settings, settings.topic_name("inbound"), 6, 4)
    started = time.monotonic()

    report = copy_range(settings, Selection("inbound", partitions=(6,)), timeout_s=20)

    [p] = report.partitions
    assert (p.start, p.end, p.records) == (0, 4, 3)  # offset 3 is the marker
    assert time.monotonic() - started < 10  # ended at the log end, not at the timeout


def _wait_for_stable_end(settings: Settings, topic: str, partition: int, end: int) -> None:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"lso-{uuid.uuid4().hex[:6]}",
            "isolation.level": "read_committed",
        }
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high >= end or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        consumer.close()
    assert high == end, f"the transaction's end offset never became stable: {high}"
