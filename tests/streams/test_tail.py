"""``streams.tail`` on the real broker: positions, filters, decoding, masking."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from streams.admin import ensure_topics
from streams.codec import AvroCodec, record_to_json
from streams.errors import ConfigError, TopicError
from streams.settings import Settings
from streams.tail import (
    Start,
    TailRequest,
    lead_state_changelog_topic,
    parse_time,
    read_records,
    resolve_topic,
    tail,
)
from streams.topics import by_name

PARTITIONS = 3
LEADS = 9
#: Record timestamps: lead i is produced at T0 + i seconds.
T0 = int(time.time() * 1000) - 3_600_000
RAW = AvroCodec("leadflow.RawLead")
SENT = AvroCodec("leadflow.TouchSent")
JSON_BYTES = b'{"email": "jane@example.com"}'


def raw_lead(i: int) -> dict[str, Any]:
    return {
        "campaign_id": "tail-test",
        "lead_id": f"lead-{i}",
        "first_name": "Jane",
        "last_name": "Doe",
        "email": f"jane.doe{i}@example.com",
        "phone": f"+1415555{i:04d}",
        "company": "Acme",
        "title": "CEO",
        "timezone": None,
        "country": "US",
        "state": "CA",
        "attributes": {"mobile": "+14155550100", "note": f"call 415-555-01{i:02d}"},
        "event_time": datetime(2026, 11, 26, tzinfo=UTC),
        "source": "csv",
        "source_line": i + 2,
    }


def produce(
    settings: Settings, topic: str, rows: Sequence[tuple[int, bytes, bytes | None, int]]
) -> None:
    """(partition, key, value, timestamp ms) each, in order."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for partition, key, value, ts in rows:
        producer.produce(topic, key=key, value=value, partition=partition, timestamp=ts)
    assert producer.flush(15) == 0


@pytest.fixture(scope="module")
def seeded(services: Any) -> Settings:
    """Topics of their own (3 partitions) with 9 leads, one JSON and one wrong-schema record."""
    base: Settings = services.settings
    settings = dataclasses.replace(
        base,
        topic_prefix=f"{base.topic_prefix}tail{uuid.uuid4().hex[:6]}-",
        topic_partitions=PARTITIONS,
    )
    ensure_topics(settings, (by_name("raw"), by_name("dead-letter")))
    topic = settings.topic_name("raw")
    rows = [
        (i % PARTITIONS, f"lead-{i}".encode(), RAW.encode(raw_lead(i)), T0 + i * 1000)
        for i in range(LEADS)
    ]
    sent = {
        "campaign_id": "tail-test",
        "lead_id": "lead-wrong",
        "touch": 1,
        "channel": "sms",
        "provider": "sim",
        "status": "accepted",
        "idempotency_key": "k",
        "cost_units": 1.0,
        "sent_at": T0,
        "event_time": T0,
    }
    rows += [
        (0, b"lead-json", JSON_BYTES, T0 + 20_000),
        (1, b"lead-wrong", SENT.encode(sent), T0 + 21_000),
    ]
    produce(settings, topic, rows)
    return settings


def everything(settings: Settings, **kwargs: Any) -> list[dict[str, Any]]:
    request = TailRequest(
        **{"topic": "raw", "start": Start.BEGINNING, "exit_at_end": True, **kwargs}
    )
    return list(tail(settings, request))


def test_from_beginning_to_the_end_decodes_and_masks_every_record(seeded: Settings) -> None:
    started = time.monotonic()
    got = everything(seeded)
    assert time.monotonic() - started < 15  # stops at the end offsets, does not follow
    assert len(got) == LEADS + 2
    leads = sorted((r for r in got if "value" in r), key=lambda r: r["key"])
    assert [r["key"] for r in leads] == [f"lead-{i}" for i in range(LEADS)]
    for r in leads:
        i = int(r["key"].split("-")[1])
        assert r["topic"] == seeded.topic_name("raw")
        assert r["partition"] == i % PARTITIONS
        assert r["offset"] == i // PARTITIONS  # each partition's own offsets
        assert r["timestamp"] == datetime.fromtimestamp((T0 + i * 1000) / 1000, UTC)
        assert r["schema"] == "leadflow.RawLead v2"
        value = r["value"]
        assert value["lead_id"] == f"lead-{i}"
        assert value["first_name"] == "J***" and value["last_name"] == "D***"
        assert value["email"] == "j***@example.com"
        assert value["phone"] == f"+1***{i:04d}"
        assert value["attributes"] == {"mobile": "+1***0100", "note": f"call ***01{i:02d}"}
        line = record_to_json(r)
        assert "jane" not in line.lower() and "Doe" not in line and "555" not in line
    # Within a partition, records come in offset order.
    for p in range(PARTITIONS):
        offsets = [r["offset"] for r in got if r["partition"] == p]
        assert offsets == sorted(offsets)


def test_show_pii_prints_the_values_as_produced(seeded: Settings) -> None:
    got = everything(seeded, key="lead-3", show_pii=True)
    assert len(got) == 1
    value = got[0]["value"]
    expected = raw_lead(3)
    assert value == {**expected, "timezone": None}
    assert (
        json.loads(record_to_json(got[0]))["value"]["event_time"] == "2026-11-26T00:00:00.000+00:00"
    )


def test_key_filter(seeded: Settings) -> None:
    got = everything(seeded, key="lead-4")
    assert [(r["key"], r["partition"], r["value"]["lead_id"]) for r in got] == [
        ("lead-4", 1, "lead-4")
    ]
    assert everything(seeded, key="no-such-lead") == []


def test_partition_filter(seeded: Settings) -> None:
    got = everything(seeded, partitions=(1,))
    assert {r["partition"] for r in got} == {1}
    assert sorted(r["key"] for r in got) == ["lead-1", "lead-4", "lead-7", "lead-wrong"]
    two = everything(seeded, partitions=(0, 2))
    assert {r["partition"] for r in two} == {0, 2}
    assert len(two) == LEADS + 2 - 4


def test_max_stops_after_n_matching_records(seeded: Settings) -> None:
    assert len(everything(seeded, max_records=2)) == 2
    got = everything(seeded, max_records=1, key="lead-8")
    assert [r["key"] for r in got] == ["lead-8"]
    with pytest.raises(ConfigError, match="at least 1"):
        everything(seeded, max_records=0)


def test_from_time_starts_at_the_first_record_at_or_after_it(seeded: Settings) -> None:
    at = T0 + 5_000
    got = everything(seeded, start=Start.TIME, from_time_ms=at)
    keys = sorted(r["key"] for r in got)
    assert keys == ["lead-5", "lead-6", "lead-7", "lead-8", "lead-json", "lead-wrong"]
    iso = datetime.fromtimestamp(at / 1000, UTC).isoformat()
    assert parse_time(iso) == at
    assert [
        r["key"]
        for r in everything(seeded, start=Start.TIME, from_time_ms=parse_time(iso), key="lead-5")
    ] == ["lead-5"]
    # Later than every record: nothing to read, and it stops at once.
    assert everything(seeded, start=Start.TIME, from_time_ms=T0 + 3_600_000) == []


def test_undecodable_records_are_reported_not_fatal(seeded: Settings) -> None:
    got = {r["key"]: r for r in everything(seeded) if "error" in r}
    assert set(got) == {"lead-json", "lead-wrong"}
    json_rec = got["lead-json"]
    assert json_rec["error_reason"] == "not_avro"
    assert "looks like JSON" in json_rec["error"]
    assert json_rec["raw"] is None  # it holds an email address: withheld when masked
    assert json_rec["raw_size"] == len(JSON_BYTES)
    assert "value" not in json_rec
    wrong = got["lead-wrong"]
    assert wrong["error_reason"] == "schema_mismatch"
    assert "leadflow.TouchSent" in wrong["error"]
    assert SENT.decode(wrong["raw"])["lead_id"] == "lead-wrong"  # the bytes as produced
    line = json.loads(record_to_json(wrong))
    assert base64.b64decode(line["raw"]) == wrong["raw"]
    shown = {r["key"]: r for r in everything(seeded, show_pii=True) if "error" in r}
    assert shown["lead-json"]["raw"] == JSON_BYTES


def test_following_from_the_end_prints_only_new_records(seeded: Settings) -> None:
    settings = dataclasses.replace(
        seeded, topic_prefix=f"{seeded.topic_prefix}f{uuid.uuid4().hex[:4]}-"
    )
    ensure_topics(settings, (by_name("raw"),))
    topic = settings.topic_name("raw")
    produce(settings, topic, [(0, b"old", RAW.encode(raw_lead(0)), T0)])
    produced: list[bool] = []

    def produce_once_started() -> bool:
        # Called after the start offsets are taken: new records come after them.
        if not produced:
            produce(
                settings,
                topic,
                [(p, f"new-{p}".encode(), RAW.encode(raw_lead(p)), T0) for p in range(2)],
            )
            produced.append(True)
        return False

    request = TailRequest(topic="raw", max_records=2)
    got = list(tail(settings, request, should_stop=produce_once_started))
    assert sorted(r["key"] for r in got) == ["new-0", "new-1"]


def test_following_stops_when_asked(seeded: Settings) -> None:
    calls: list[float] = []

    def stop_after_three_polls() -> bool:
        calls.append(time.monotonic())
        return len(calls) > 3

    started = time.monotonic()
    got = list(
        tail(seeded, TailRequest(topic="raw"), should_stop=stop_after_three_polls, poll_s=0.2)
    )
    assert got == []  # from the end: nothing new
    assert len(calls) == 4
    assert time.monotonic() - started < 10


def test_dead_letters_show_their_payload_decoded_and_masked(seeded: Settings) -> None:
    payload = RAW.encode(raw_lead(1))
    letter = {
        "original_topic": seeded.topic_name("raw"),
        "original_partition": 1,
        "original_offset": 0,
        "original_key": b"lead-1",
        "stage": "enrich",
        "reason": "unknown_campaign",
        "error_class": "UnknownCampaignError",
        "error_message": "campaign 'tail-test' does not exist",
        "attempt": 1,
        "payload": payload,
        "campaign_id": "tail-test",
        "lead_id": "lead-1",
        "failed_at": datetime(2026, 11, 26, tzinfo=UTC),
        "history": [],
    }
    codec = AvroCodec("leadflow.DeadLetter")
    topic = seeded.topic_name("dead-letter")
    produce(seeded, topic, [(2, b"lead-1", codec.encode(letter), T0)])
    request = TailRequest(topic="dead-letter", start=Start.BEGINNING, exit_at_end=True)
    [masked] = list(tail(seeded, request))
    value = masked["value"]
    assert value["payload"] is None and value["payload_size"] == len(payload)
    assert value["payload_record"]["schema"] == "leadflow.RawLead"
    assert value["payload_record"]["record"]["email"] == "j***@example.com"
    assert value["reason"] == "unknown_campaign"
    assert "jane" not in record_to_json(masked).lower()
    [shown] = list(tail(seeded, dataclasses.replace(request, show_pii=True)))
    assert shown["value"]["payload"] == payload
    assert shown["value"]["payload_record"]["record"]["email"] == "jane.doe1@example.com"


def test_lead_state_changelog_with_tombstones_and_campaign_keys(seeded: Settings) -> None:
    topic = lead_state_changelog_topic(seeded)
    assert resolve_topic(seeded, "lead-state-changelog") == (topic, "leadflow.LeadState")
    assert topic == f"{seeded.topic_prefix}leadflow-lead-state-changelog"
    admin = AdminClient({"bootstrap.servers": seeded.bootstrap_servers})
    admin.create_topics(
        [
            NewTopic(
                topic, num_partitions=2, replication_factor=1, config={"cleanup.policy": "compact"}
            )
        ]
    )[topic].result()
    state = AvroCodec("leadflow.LeadState")
    record = {
        "campaign_id": "c1",
        "lead_id": "lead-7",
        "state": "completed",
        "touch": 4,
        "reason": None,
        "updated_at": T0,
        "version": 9,
    }
    key = b"c1\x1flead-7"
    produce(seeded, topic, [(1, key, state.encode(record), T0), (1, key, None, T0 + 1)])
    request = TailRequest(
        topic="lead-state-changelog", start=Start.BEGINNING, exit_at_end=True, key="lead-7"
    )
    got = list(tail(seeded, request))
    assert [(r["key"], r["offset"]) for r in got] == [("c1\x1flead-7", 0), ("c1\x1flead-7", 1)]
    assert got[0]["value"]["state"] == "completed"
    assert got[1]["value"] is None  # a tombstone
    raw = list(read_records(seeded.bootstrap_servers, topic))
    assert [(r.partition, r.key, r.value is None) for r in raw] == [(1, key, False), (1, key, True)]


def test_unknown_and_missing_topics_and_partitions(seeded: Settings) -> None:
    with pytest.raises(ConfigError, match=r"unknown topic 'nope'.*raw, enriched"):
        resolve_topic(seeded, "nope")
    with pytest.raises(TopicError, match="does not exist"):
        list(tail(seeded, TailRequest(topic="scored", exit_at_end=True)))
    with pytest.raises(TopicError, match="no partition 7"):
        list(tail(seeded, TailRequest(topic="raw", partitions=(1, 7), exit_at_end=True)))


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1764171000000", 1764171000000),
        ("2026-11-26T15:30:00Z", 1795707000000),
        ("2026-11-26T15:30:00", 1795707000000),  # naive means UTC
        ("2026-11-26T16:30:00+01:00", 1795707000000),
        ("2026-11-26", 1795651200000),
    ],
)
def test_parse_time(text: str, ms: int) -> None:
    assert parse_time(text) == ms


def test_parse_time_refuses_other_text() -> None:
    with pytest.raises(ConfigError, match="neither an ISO-8601 time"):
        parse_time("yesterday")
