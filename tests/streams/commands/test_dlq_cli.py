"""``leadflow dlq list|show|redrive`` through click's CliRunner, on the real broker and Postgres."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner, Result
from confluent_kafka import Producer

from streams.admin import ensure_topics
from streams.codec import AvroCodec
from streams.commands.dlq import dlq
from streams.dead_letters import DeadLetterId
from streams.dlq import DeadLetterNotFoundError
from streams.errors import ConfigError
from streams.settings import Settings

RAW = AvroCodec("leadflow.RawLead")
DEAD = AvroCodec("leadflow.DeadLetter")


@pytest.fixture(scope="module")
def dlq_settings(services: Any) -> Iterator[Settings]:
    """Settings with a topic prefix of this module's own, its topics created."""
    prefix = f"{services.settings.topic_prefix}dlqcli{uuid.uuid4().hex[:6]}-"
    settings: Settings = replace(services.settings, topic_prefix=prefix)
    ensure_topics(settings)
    yield settings


def seed(settings: Settings, campaign: str, leads: list[str], stage: str = "enrich") -> None:
    """Dead letters of ``campaign`` as the enrich stage writes them for an unknown campaign."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "log_level": 3})
    for lead in leads:
        payload = RAW.encode(
            {
                "campaign_id": campaign,
                "lead_id": lead,
                "first_name": "Grace",
                "email": "grace@example.com",
                "phone": "+15125550199",
                "attributes": {},
                "event_time": datetime.now(UTC),
                "source": "api",
            }
        )
        record = {
            "original_topic": settings.topic_name("raw"),
            "original_partition": 0,
            "original_offset": 1,
            "original_key": lead.encode(),
            "stage": stage,
            "reason": "unknown_campaign",
            "error_class": "UnknownCampaignError",
            "error_message": f"campaign {campaign!r} does not exist",
            "attempt": 1,
            "payload": payload,
            "campaign_id": campaign,
            "lead_id": lead,
            "failed_at": datetime.now(UTC),
            "history": [],
        }
        producer.produce(
            settings.topic_name("dead-letter"), key=lead.encode(), value=DEAD.encode(record)
        )
    assert producer.flush(15) == 0


def run(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(dlq, list(args), obj=settings)


def test_list_prints_a_table_and_a_summary(dlq_settings: Settings) -> None:
    campaign = f"cli-{uuid.uuid4().hex[:6]}"
    seed(dlq_settings, campaign, ["a1", "a2"])
    seed(dlq_settings, campaign, ["b1"], stage="score")
    result = run(dlq_settings, "list", "--campaign", campaign)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "3 dead letters: enrich/unknown_campaign 2, score/unknown_campaign 1"
    assert lines[1].split()[:4] == ["ID", "FAILED", "AT", "(UTC)"]
    rows = lines[2:]
    assert len(rows) == 3
    assert all(row.rstrip().endswith(" no") for row in rows)  # none redriven yet
    assert all(" raw[0]@1 " in row for row in rows)

    only_score = run(dlq_settings, "list", "--campaign", campaign, "--stage", "score", "--json")
    doc = json.loads(only_score.stdout)
    assert doc["count"] == 1
    assert doc["by_stage_reason"] == [{"stage": "score", "reason": "unknown_campaign", "count": 1}]
    [row] = doc["dead_letters"]
    assert row["lead_id"] == "b1" and row["original_key"] == "b1" and row["redriven"] is False
    assert "payload" not in row and row["payload_size"] > 0

    none = run(dlq_settings, "list", "--campaign", "no-such-campaign-at-all")
    assert none.stdout.strip() == "0 dead letters"


def test_show_prints_the_record_with_contact_data_masked(dlq_settings: Settings) -> None:
    campaign = f"cli-{uuid.uuid4().hex[:6]}"
    seed(dlq_settings, campaign, ["s1"])
    [row] = json.loads(run(dlq_settings, "list", "--campaign", campaign, "--json").stdout)[
        "dead_letters"
    ]
    shown = run(dlq_settings, "show", row["id"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["id"] == row["id"]
    assert doc["reason"] == "unknown_campaign" and doc["attempt"] == 1
    assert doc["payload"]["schema"] == "leadflow.RawLead"
    assert doc["payload"]["record"]["phone"] == "+1***0199"
    assert "grace@example.com" not in shown.stdout
    assert doc["redrive"] is None

    raw = json.loads(run(dlq_settings, "show", row["id"], "--show-pii").stdout)
    assert raw["payload"]["record"]["email"] == "grace@example.com"

    bad = run(dlq_settings, "show", "seven")
    assert isinstance(bad.exception, ConfigError)
    missing = run(dlq_settings, "show", "0:99999999")
    assert isinstance(missing.exception, DeadLetterNotFoundError)


def test_redrive_needs_a_selection_and_skips_what_it_did_before(dlq_settings: Settings) -> None:
    campaign = f"cli-{uuid.uuid4().hex[:6]}"
    seed(dlq_settings, campaign, ["r1", "r2"])
    refused = run(dlq_settings, "redrive")
    assert refused.exit_code == 2
    assert "give a filter, --ids, or --all" in refused.output

    dry = run(dlq_settings, "redrive", "--campaign", campaign, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would redrive: 2" in dry.stdout
    assert f"{dlq_settings.topic_name('raw')}" in dry.stdout

    rows = json.loads(run(dlq_settings, "list", "--campaign", campaign, "--json").stdout)[
        "dead_letters"
    ]
    first = DeadLetterId.parse(rows[0]["id"])
    one = run(dlq_settings, "redrive", "--ids", str(first), "--rate", "100")
    assert one.exit_code == 0, one.output
    assert "redriven: 1" in one.stdout
    assert "redrive: 1/1 sent" in one.stderr

    both = run(dlq_settings, "redrive", "--campaign", campaign)
    assert "redriven: 1" in both.stdout
    assert "skipped, redriven before: 1" in both.stdout

    listed = json.loads(run(dlq_settings, "list", "--campaign", campaign, "--json").stdout)
    assert [r["redriven"] for r in listed["dead_letters"]] == [True, True]
    shown = json.loads(run(dlq_settings, "show", str(first)).stdout)
    assert shown["redrive"]["count"] == 1

    again = run(dlq_settings, "redrive", "--campaign", campaign, "--again")
    assert "redriven: 2" in again.stdout
    assert json.loads(run(dlq_settings, "show", str(first)).stdout)["redrive"]["count"] == 2
