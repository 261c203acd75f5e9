"""Ingestion: parsing, rejects with line numbers, flat memory, and publishing to raw."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from streams.admin import ensure_topics
from streams.codec import AvroCodec
from streams.ingest import RowRejectedError, derive_lead_id, ingest_file, iter_rows, row_to_record
from streams.leadgen import LeadMix, generate, write_csv
from streams.settings import Settings

NOW = datetime(2026, 11, 26, tzinfo=UTC)


def test_csv_rows_and_a_malformed_row() -> None:
    text = "first_name,phone,email,plan\nAna,512-867-5309,,gold\nBen,1,2,3,4\n"
    rows = list(iter_rows(io.StringIO(text), "csv"))
    assert rows[0] == (
        2,
        {"first_name": "Ana", "phone": "512-867-5309", "email": "", "plan": "gold"},
    )
    line, bad = rows[1]
    assert line == 3 and isinstance(bad, RowRejectedError) and bad.reason == "malformed"


def test_jsonl_rows_and_bad_json() -> None:
    text = '{"phone": "+15128675309"}\n\n{nope\n[1,2]\n'
    rows = list(iter_rows(io.StringIO(text), "jsonl"))
    assert rows[0] == (1, {"phone": "+15128675309"})
    assert [(line, r.reason) for line, r in rows[1:] if isinstance(r, RowRejectedError)] == [
        (3, "malformed"),
        (4, "malformed"),
    ]


def test_record_keeps_extra_columns_as_attributes_and_derives_a_stable_id() -> None:
    row = {"first_name": "Ana", "phone": "512-867-5309", "plan": "gold"}
    rec = row_to_record("c1", row, line=2, source="csv", now=NOW)
    assert rec["attributes"] == {"plan": "gold"}
    assert rec["lead_id"] == derive_lead_id("c1", row) == derive_lead_id("c1", dict(row))
    assert rec["lead_id"] != derive_lead_id("c2", row)
    assert rec["source_line"] == 2 and rec["source"] == "csv"
    AvroCodec("leadflow.RawLead", validate=True).encode(rec)  # matches the schema


def test_row_without_usable_contact_is_rejected() -> None:
    with pytest.raises(RowRejectedError) as info:
        row_to_record("c1", {"phone": "12345", "email": "nope"}, line=5, source="csv", now=NOW)
    assert info.value.reason == "no_contact"


def test_memory_stays_flat_while_reading_a_large_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "big.csv", 60_000, mix=LeadMix(invalid=0.0, duplicates=0.0))
    tracemalloc.start()
    count = 0
    with path.open(newline="") as fh:
        for line, row in iter_rows(fh, "csv"):
            assert isinstance(row, dict)
            row_to_record("c1", row, line=line, source="csv", now=NOW)
            count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 60_000
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes: the reader holds rows in memory"


def test_generator_mix() -> None:
    rows = list(generate(2000, seed=3))
    assert len(rows) == 2000
    invalid = sum(1 for r in rows if r["phone"] == "12345")
    assert 60 <= invalid <= 140  # about 5 %
    assert len({r["lead_id"] for r in rows}) == 2000


def test_ingest_publishes_to_raw_and_reports_rejects(settings: Settings, tmp_path: Path) -> None:
    s = replace(settings, topic_prefix=settings.topic_prefix + "ing-")
    ensure_topics(s)
    path = write_csv(tmp_path / "leads.csv", 300, seed=11)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("lead-x,Zed,,,,,,,,\n")  # no contact at all
    summary = ingest_file(s, "camp-1", path)
    expected_bad = sum(1 for r in generate(300, seed=11) if r["phone"] == "12345") + 1
    assert summary.rejected == expected_bad
    assert summary.published == 301 - expected_bad
    assert summary.reject_reasons == {"no_contact": expected_bad}
    rejects = [
        json.loads(x) for x in (tmp_path / "leads.csv.rejects.jsonl").read_text().splitlines()
    ]
    assert len(rejects) == expected_bad
    assert rejects[-1]["line"] == 302 and rejects[-1]["reason"] == "no_contact"

    consumer = Consumer(
        {
            "bootstrap.servers": s.bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([s.topic_name("raw")])
    codec = AvroCodec("leadflow.RawLead")
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 30
        while len(seen) < summary.published and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            rec = codec.decode(msg.value())  # type: ignore[arg-type]
            assert msg.key() == rec["lead_id"].encode()
            assert rec["campaign_id"] == "camp-1"
            seen.add(rec["lead_id"])
    finally:
        consumer.close()
    assert len(seen) == summary.published
