"""Campaign statistics are recomputed from the ledger and leads: idempotent by construction."""

from __future__ import annotations

import uuid
from dataclasses import replace

import psycopg

from sinks.campaign_stats import CampaignStatsSink
from sinks.campaigns import CampaignStore
from sinks.db import StageDatabase
from streams.campaign import load_campaign
from streams.settings import REPO_ROOT, Settings


def seed(dsn: str, campaign: str) -> None:
    CampaignStore(dsn).create(
        replace(load_campaign(REPO_ROOT / "examples" / "campaign.yaml"), id=campaign)
    )
    with psycopg.connect(dsn) as conn:
        for lead, state in (("a", "completed"), ("b", "in_sequence"), ("c", "opted_out")):
            conn.execute(
                "INSERT INTO leads (campaign_id, lead_id, state) VALUES (%s, %s, %s)",
                (campaign, lead, state),
            )
        for lead, touch, channel, status, cost in (
            ("a", 1, "sms", "accepted", 1.0),
            ("a", 2, "voice", "accepted", 5.0),
            ("b", 1, "sms", "failed", 0.0),
            ("c", 1, "sms", "accepted", 1.0),
        ):
            conn.execute(
                "INSERT INTO send_ledger (campaign_id, lead_id, touch, channel, idempotency_key,"
                " status, cost_units) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (campaign, lead, touch, channel, f"{campaign}:{lead}:{touch}", status, cost),
            )


def stats(dsn: str, campaign: str) -> dict[str, float]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT metric, value FROM campaign_stats WHERE campaign_id = %s", (campaign,)
        ).fetchall()
    return {str(m): float(v) for m, v in rows}


async def test_stats_follow_the_ledger_and_a_second_flush_changes_nothing(
    settings: Settings, dsn: str
) -> None:
    campaign = f"cs-{uuid.uuid4().hex[:8]}"
    seed(dsn, campaign)
    db = StageDatabase(settings.worker_dsn, "stats-test")
    sink = CampaignStatsSink(db)
    try:
        for offset in range(3):
            sink.add({"campaign_id": campaign}, "sent", offset, offset)
        assert await sink.flush() == {("sent", 0): 0, ("sent", 1): 1, ("sent", 2): 2}
        first = stats(dsn, campaign)
        sink.add({"campaign_id": campaign}, "sent", 0, 0)
        await sink.flush()
    finally:
        await db.aclose()
    assert first == stats(dsn, campaign)
    assert first["sends.accepted"] == 3
    assert first["sends.accepted.sms"] == 2
    assert first["sends.failed"] == 1
    assert first["cost_units"] == 7.0
    assert first["leads.total"] == 3
    assert first["leads.terminal"] == 2
    assert abs(first["completion_rate"] - 2 / 3) < 1e-9
