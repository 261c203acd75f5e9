"""Dead letters: ids, filters, masking, and redrive on the real broker and Postgres.

The integration tests write ``leadflow.DeadLetter`` records straight onto a
dead-letter topic of their own (a topic prefix per module) and redrive them
into that prefix's pipeline topics; no worker runs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from agents.runtime import ATTEMPT_HEADER, HISTORY_HEADER, BatchResult, Item, Stage, StageRunner
from sinks.dead_letter_redrives import RedriveInProgressError, RedriveStore
from streams.admin import ensure_topics
from streams.codec import AvroCodec
from streams.dead_letters import DeadLetter, DeadLetterId, dead_letter_topic, fetch_dead_letters
from streams.dlq import (
    DeadLetterFilter,
    DeadLetterNotFoundError,
    describe,
    mask_record,
    parse_time,
    redrive,
    redrive_headers,
    select_dead_letters,
)
from streams.errors import ConfigError, LeadflowError
from streams.settings import Settings

RAW = AvroCodec("leadflow.RawLead")
DEAD = AvroCodec("leadflow.DeadLetter")
NOW = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)
FIRST = DeadLetterId(0, 0)


def raw_lead(campaign_id: str, lead_id: str) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "lead_id": lead_id,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "phone": "+15125550123",
        "attributes": {"note": "call +1 512 555 0123 or ada@example.com"},
        "event_time": NOW,
        "source": "csv",
    }


def dead_record(
    topic: str,
    campaign_id: str,
    lead_id: str,
    *,
    stage: str = "enrich",
    reason: str = "unknown_campaign",
    attempt: int = 1,
    failed_at: datetime = NOW,
    history: list[dict[str, Any]] | None = None,
    original_partition: int = 0,
    original_offset: int = 7,
) -> dict[str, Any]:
    return {
        "original_topic": topic,
        "original_partition": original_partition,
        "original_offset": original_offset,
        "original_key": lead_id.encode(),
        "stage": stage,
        "reason": reason,
        "error_class": "UnknownCampaignError",
        "error_message": f"campaign {campaign_id!r} does not exist",
        "attempt": attempt,
        "payload": RAW.encode(raw_lead(campaign_id, lead_id)),
        "campaign_id": campaign_id,
        "lead_id": lead_id,
        "failed_at": failed_at,
        "history": history or [],
    }


def as_dead_letter(record: dict[str, Any], ident: DeadLetterId = FIRST) -> DeadLetter:
    return DeadLetter(ident, DEAD.decode(DEAD.encode(record)))


# --- without services ----------------------------------------------------------------


def test_ids_parse_and_print() -> None:
    assert DeadLetterId.parse(" 3:1042 ") == DeadLetterId(3, 1042)
    assert str(DeadLetterId(3, 1042)) == "3:1042"
    for bad in ("3", "a:1", "3:-1", "3:1:2", ""):
        with pytest.raises(ConfigError, match="partition:offset"):
            DeadLetterId.parse(bad)


def test_times_are_iso_or_a_duration_ago() -> None:
    assert parse_time("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_time("1d12h", NOW) == NOW - timedelta(hours=36)
    assert parse_time("now", NOW) == NOW
    assert parse_time("2026-11-30T10:00:00Z") == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert parse_time("2026-11-30T10:00:00") == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert parse_time("2026-11-30T10:00:00+01:00") == datetime(2026, 11, 30, 9, tzinfo=UTC)
    with pytest.raises(ConfigError, match="duration ago"):
        parse_time("yesterday", NOW)


def test_filter_conditions_all_apply() -> None:
    a = as_dead_letter(dead_record("p-raw", "c1", "l1"))
    b = as_dead_letter(
        dead_record("p-scored", "c2", "l2", stage="schedule", reason="schema_mismatch"),
        DeadLetterId(1, 0),
    )
    old = as_dead_letter(
        dead_record("p-raw", "c1", "l3", failed_at=NOW - timedelta(days=2)), DeadLetterId(2, 0)
    )
    every = [a, b, old]
    assert DeadLetterFilter().empty
    assert DeadLetterFilter().select(every) == [old, a, b]  # oldest failure first
    assert DeadLetterFilter(stages=frozenset({"schedule"})).select(every) == [b]
    assert DeadLetterFilter(reasons=frozenset({"unknown_campaign"})).select(every) == [old, a]
    assert DeadLetterFilter(campaigns=frozenset({"c2"})).select(every) == [b]
    assert DeadLetterFilter(topics=frozenset({"p-raw"})).select(every) == [old, a]
    assert DeadLetterFilter(leads=frozenset({"l3"})).select(every) == [old]
    assert DeadLetterFilter(since=NOW - timedelta(days=1)).select(every) == [a, b]
    assert DeadLetterFilter(until=NOW).select(every) == [old]  # until is exclusive
    both = DeadLetterFilter(campaigns=frozenset({"c1"}), since=NOW - timedelta(hours=1))
    assert not both.empty
    assert both.select(every) == [a]


def test_masking_hides_contact_data_everywhere() -> None:
    masked = mask_record(raw_lead("c1", "l1"))
    text = repr(masked)
    for secret in ("ada@example.com", "5125550123", "555 0123", "Lovelace"):
        assert secret not in text
    assert masked["phone"] == "+1***0123"
    assert masked["email"] == "a***@example.com"
    assert masked["first_name"] == "A***"
    assert masked["lead_id"] == "l1" and masked["campaign_id"] == "c1"


class _Failing(Stage):
    name = "enrich"
    input_schema = "leadflow.RawLead"

    async def handle(self, items: Any) -> BatchResult:
        raise AssertionError("not called")


def _fail_again(message: Any) -> dict[str, Any]:
    """What the stage runner dead-letters when ``message`` (a redriven record) fails again."""
    runner = StageRunner(
        _Failing(), producer=None, input_topic=message.topic, dead_letter_topic="dlq"
    )
    item: Item = runner._item(SimpleNamespace(message=message))
    item.record = RAW.decode(item.payload)
    out = runner.dead_letter(item, LeadflowError("still broken"))
    return DEAD.decode(out.value)


def test_headers_carry_the_next_attempt_and_every_failure() -> None:
    earlier = {
        "stage": "score",
        "reason": "schema_mismatch",
        "error_class": "SchemaMismatchError",
        "error_message": "x",
        "failed_at": NOW - timedelta(days=1),
    }
    dead = as_dead_letter(dead_record("p-raw", "c1", "l1", attempt=2, history=[earlier]))
    headers = dict(redrive_headers(dead))
    assert headers[ATTEMPT_HEADER] == b"3"
    message = SimpleNamespace(
        topic="p-raw",
        partition=0,
        offset=9,
        key=b"l1",
        value=dead.record["payload"],
        headers=list(headers.items()),
    )
    again = _fail_again(message)
    assert again["attempt"] == 3
    assert [h["reason"] for h in again["history"]] == ["schema_mismatch", "unknown_campaign"]
    assert again["history"][1]["failed_at"] == NOW
    assert again["reason"] == "error"


# --- on the real broker and Postgres ------------------------------------------------


@pytest.fixture(scope="module")
def dlq_settings(services: Any) -> Iterator[Settings]:
    """Settings with a topic prefix of this module's own, its topics created."""
    settings: Settings = replace(
        services.settings,
        topic_prefix=f"{services.settings.topic_prefix}dlq{uuid.uuid4().hex[:6]}-",
    )
    ensure_topics(settings)
    yield settings


def publish(settings: Settings, records: list[dict[str, Any]], timestamp_ms: int = 0) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "log_level": 3})
    for rec in records:
        producer.produce(
            dead_letter_topic(settings),
            key=rec["original_key"],
            value=DEAD.encode(rec),
            timestamp=timestamp_ms,
        )
    assert producer.flush(15) == 0


def campaign_letters(settings: Settings, campaign: str) -> list[DeadLetter]:
    return select_dead_letters(settings, DeadLetterFilter(campaigns=frozenset({campaign})))


def end_offsets(settings: Settings, base: str) -> dict[int, int]:
    topic = settings.topic_name(base)
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "dlq-test"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
    finally:
        consumer.close()


def read_new(settings: Settings, base: str, before: dict[int, int]) -> list[Any]:
    """Records on ``base`` past the offsets in ``before``."""
    topic = settings.topic_name(base)
    after = end_offsets(settings, base)
    want = sum(after[p] - before.get(p, 0) for p in after)
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "dlq-read"})
    consumer.assign([TopicPartition(topic, p, before.get(p, 0)) for p in after])
    out: list[Any] = []
    deadline = time.monotonic() + 15
    try:
        while len(out) < want and time.monotonic() < deadline:
            out += [m for m in consumer.consume(100, timeout=0.5) if not m.error()]
    finally:
        consumer.close()
    return out


def test_select_reads_filters_and_fetches_by_id(dlq_settings: Settings) -> None:
    settings, campaign = dlq_settings, f"sel-{uuid.uuid4().hex[:6]}"
    raw = settings.topic_name("raw")
    now = datetime.now(UTC)
    old = now - timedelta(days=3)
    publish(
        settings,
        [dead_record(raw, campaign, "old-1", failed_at=old)],
        timestamp_ms=int(old.timestamp() * 1000),
    )
    publish(
        settings,
        [
            dead_record(raw, campaign, "new-1", failed_at=now),
            dead_record(
                settings.topic_name("scored"),
                campaign,
                "new-2",
                stage="schedule",
                reason="schema_mismatch",
                failed_at=now,
            ),
        ],
    )
    found = campaign_letters(settings, campaign)
    assert sorted(d.lead_id or "" for d in found) == ["new-1", "new-2", "old-1"]
    assert len({d.id for d in found}) == 3
    recent = select_dead_letters(
        settings,
        DeadLetterFilter(campaigns=frozenset({campaign}), since=now - timedelta(hours=1)),
    )
    assert sorted(d.lead_id or "" for d in recent) == ["new-1", "new-2"]
    by_stage = select_dead_letters(
        settings, DeadLetterFilter(campaigns=frozenset({campaign}), stages=frozenset({"schedule"}))
    )
    assert [d.lead_id for d in by_stage] == ["new-2"]
    one = found[0]
    assert fetch_dead_letters(settings, [one.id]) == {one.id: one}
    with pytest.raises(DeadLetterNotFoundError, match="no dead letter at 0:999999"):
        select_dead_letters(settings, DeadLetterFilter(), [DeadLetterId(0, 999_999)])


def test_describe_decodes_the_payload_and_masks_it(dlq_settings: Settings) -> None:
    settings, campaign = dlq_settings, f"desc-{uuid.uuid4().hex[:6]}"
    publish(settings, [dead_record(settings.topic_name("raw"), campaign, "d-1")])
    [dead] = campaign_letters(settings, campaign)
    doc = describe(settings, dead)
    assert doc["id"] == str(dead.id)
    assert doc["payload"]["schema"] == "leadflow.RawLead"
    assert doc["payload"]["record"]["lead_id"] == "d-1"
    assert "ada@example.com" not in repr(doc) and "5125550123" not in repr(doc)
    assert "bytes_hex" not in doc["payload"]
    shown = describe(settings, dead, show_pii=True)
    assert shown["payload"]["record"]["email"] == "ada@example.com"


def test_dry_run_publishes_and_records_nothing(dlq_settings: Settings, dsn: str) -> None:
    settings, campaign = dlq_settings, f"dry-{uuid.uuid4().hex[:6]}"
    publish(
        settings, [dead_record(settings.topic_name("raw"), campaign, f"l{i}") for i in range(3)]
    )
    found = campaign_letters(settings, campaign)
    before = end_offsets(settings, "raw")
    result = redrive(settings, found, dry_run=True)
    assert result.dry_run and result.total == 3
    assert result.redriven == {settings.topic_name("raw"): 3}
    assert end_offsets(settings, "raw") == before
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM dead_letter_redrives WHERE campaign_id = %s", (campaign,)
        ).fetchone()
    assert row == (0,)


def test_redrive_republishes_once_and_again_only_when_asked(
    dlq_settings: Settings, dsn: str
) -> None:
    settings, campaign = dlq_settings, f"rd-{uuid.uuid4().hex[:6]}"
    raw = settings.topic_name("raw")
    records = [dead_record(raw, campaign, f"l{i}", original_partition=i % 3) for i in range(4)]
    records.append(dead_record("someone-elses-topic", campaign, "foreign"))
    publish(settings, records)
    found = campaign_letters(settings, campaign)
    before = end_offsets(settings, "raw")

    first = redrive(settings, found)
    assert first.redriven == {raw: 4}
    assert first.foreign == {"someone-elses-topic": 1}
    new = read_new(settings, "raw", before)
    assert len(new) == 4
    for msg in new:
        dead = next(d for d in found if d.record["original_key"] == msg.key())
        assert msg.value() == dead.record["payload"]
        assert msg.partition() == dead.record["original_partition"]
        assert dict(msg.headers())[ATTEMPT_HEADER] == b"2"
        assert b"unknown_campaign" in dict(msg.headers())[HISTORY_HEADER]

    after_first = end_offsets(settings, "raw")
    second = redrive(settings, found)
    assert second.total == 0 and second.already == 4
    assert end_offsets(settings, "raw") == after_first

    third = redrive(settings, found, again=True)
    assert third.total == 4 and third.already == 0
    with psycopg.connect(dsn) as conn:
        counts = conn.execute(
            "SELECT lead_id, redrive_count, attempt FROM dead_letter_redrives "
            "WHERE campaign_id = %s ORDER BY lead_id",
            (campaign,),
        ).fetchall()
    assert counts == [(f"l{i}", 2, 2) for i in range(4)]


def test_a_redriven_record_that_fails_again_keeps_its_history(dlq_settings: Settings) -> None:
    settings, campaign = dlq_settings, f"hist-{uuid.uuid4().hex[:6]}"
    publish(settings, [dead_record(settings.topic_name("raw"), campaign, "h-1")])
    found = campaign_letters(settings, campaign)
    before = end_offsets(settings, "raw")
    redrive(settings, found)
    [msg] = read_new(settings, "raw", before)
    message = SimpleNamespace(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=msg.headers(),
    )
    again = _fail_again(message)
    assert again["attempt"] == 2
    assert len(again["history"]) == 1
    assert again["history"][0]["reason"] == "unknown_campaign"
    assert again["history"][0]["failed_at"] == found[0].failed_at


def test_rate_cap_spreads_records_out(dlq_settings: Settings) -> None:
    settings, campaign = dlq_settings, f"rate-{uuid.uuid4().hex[:6]}"
    publish(
        settings, [dead_record(settings.topic_name("raw"), campaign, f"l{i}") for i in range(10)]
    )
    found = campaign_letters(settings, campaign)
    started = time.monotonic()
    result = redrive(settings, found, rate=20.0)
    elapsed = time.monotonic() - started
    assert result.total == 10
    assert elapsed >= 9 / 20.0, elapsed  # ten records at 20/s: the last leaves >= 0.45 s in
    assert result.seconds >= 9 / 20.0


def test_a_second_concurrent_redrive_is_refused(dlq_settings: Settings) -> None:
    settings, campaign = dlq_settings, f"lock-{uuid.uuid4().hex[:6]}"
    publish(settings, [dead_record(settings.topic_name("raw"), campaign, "k-1")])
    found = campaign_letters(settings, campaign)
    store = RedriveStore(settings.dsn, dead_letter_topic(settings))
    with store.lock(), pytest.raises(RedriveInProgressError, match="another"):
        redrive(settings, found)
    assert redrive(settings, found).total == 1  # the lock went with its connection


def test_a_stale_redrive_row_does_not_hide_a_new_dead_letter(
    dlq_settings: Settings, dsn: str
) -> None:
    settings, campaign = dlq_settings, f"stale-{uuid.uuid4().hex[:6]}"
    publish(settings, [dead_record(settings.topic_name("raw"), campaign, "s-1")])
    [dead] = campaign_letters(settings, campaign)
    store = RedriveStore(dsn, dead_letter_topic(settings))
    # A row for the same position, left by an earlier incarnation of the topic.
    older = DeadLetter(dead.id, {**dead.record, "failed_at": dead.failed_at - timedelta(days=9)})
    store.record([older])
    assert store.lookup([older]).keys() == {dead.id}
    assert store.lookup([dead]) == {}
    assert redrive(settings, [dead]).total == 1
    assert store.lookup([dead])[dead.id].redrive_count == 1
