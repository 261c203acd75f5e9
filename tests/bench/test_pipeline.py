"""bench_services on a configured (external) database: the benchmark's campaigns do not stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from bench import pipeline
from sinks.campaigns import CampaignStore
from streams.settings import Settings


def _queue_touch(dsn: str, campaign_id: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO pending_touches (campaign_id, lead_id, touch, kafka_partition, channel,"
            " priority, due_at, payload) VALUES (%s, 'lead-1', 1, 0, 'sms', 1, %s, '\\x00')",
            (campaign_id, datetime.now(UTC) + timedelta(hours=1)),
        )


def _left(dsn: str, campaign_ids: set[str]) -> tuple[set[str], int]:
    stored = {c.id for c in CampaignStore(dsn).list()} & campaign_ids
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pending_touches WHERE campaign_id = ANY(%s)",
            (list(campaign_ids),),
        ).fetchone()
    assert row is not None
    return stored, int(row[0])


@pytest.mark.parametrize("keep", [False, True], ids=["removed", "kept"])
def test_an_external_database_keeps_no_benchmark_campaign_unless_asked(
    isolated_db: tuple[Settings, dict[str, str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    keep: bool,
) -> None:
    settings, _env, dsn = isolated_db
    monkeypatch.setattr(pipeline, "get_settings", lambda: settings)
    with pipeline.bench_services(tmp_path, keep=keep) as services:
        assert services.dsn == dsn
        active = pipeline.bench_campaign(services)
        completed = pipeline.bench_campaign(services)
        CampaignStore(dsn).complete(completed.id)
        _queue_touch(dsn, active.id)
        ids = {active.id, completed.id}
        assert _left(dsn, ids) == (ids, 1)
    assert _left(dsn, ids) == ((ids, 1) if keep else (set(), 0))
