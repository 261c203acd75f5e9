"""No personal data in what leadflow writes for operators: worker logs and /metrics."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import phonenumbers
import pytest

from sinks.campaigns import CampaignStore
from streams.admin import ensure_topics
from streams.campaign import Campaign
from streams.ingest import ingest_file
from streams.leadgen import LeadMix, write_csv
from streams.orchestrate import LocalRun
from streams.settings import Settings

pytestmark = pytest.mark.slow
E164 = phonenumbers.PhoneNumberFormat.E164
RATES = {f"LEADFLOW_{c}_RATE": "0" for c in ("SMS", "VOICE", "EMAIL", "ENRICH")}


def personal_data(path: Path) -> set[str]:
    """Every phone number (as written and as E.164) and email address in the leads file."""
    found: set[str] = set()
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            email = (row.get("email") or "").strip()
            if "@" in email:
                found |= {email, email.lower()}
            phone = (row.get("phone") or "").strip()
            digits = re.sub(r"\D", "", phone)
            if len(digits) >= 7:
                found |= {phone, digits}
                try:
                    parsed = phonenumbers.parse(phone, "US")
                    found.add(
                        phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
                    )
                except phonenumbers.NumberParseException:
                    pass
    return found


async def test_a_campaign_leaves_no_phone_or_email_in_logs_or_metrics(
    isolated: tuple[Settings, dict[str, str]],
    dsn: str,
    tmp_path: Path,
    example_campaign: Callable[..., Campaign],
) -> None:
    settings, env = isolated
    campaign = example_campaign("pii", gap=timedelta(hours=3))
    CampaignStore(dsn).create(campaign)
    ensure_topics(settings)
    # Info level: the most a worker logs in normal operation.
    run = LocalRun(settings, tmp_path, {**env, **RATES}, time_scale=20000, worker_log_level="info")
    try:
        await run.start_sim()
        run.start_worker()
        path = write_csv(tmp_path / "leads.csv", 300, seed=7, mix=LeadMix(0.05, 0.03))
        summary = ingest_file(settings, campaign.id, path)
        replies = {f"lead-{n:07d}": "opt_out" for n in range(1, 6)}
        await run.drive(campaign.id, summary.published, replies=replies, timeout_s=180)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{run.web_ports[0]}/metrics") as response,
        ):
            metrics = await response.text()
    finally:
        run.close()

    secrets = personal_data(path)
    assert len(secrets) > 300  # the file really had phones and emails to leak
    worker_log = (tmp_path / "worker0.log").read_text(errors="replace")
    assert "leadflow_stage_records_total" in metrics  # the scrape really happened
    assert len(worker_log) > 10_000  # and the worker really logged
    leaks = sorted(s for s in secrets if s in worker_log or s in metrics)
    assert leaks == [], f"{len(leaks)} personal values in logs/metrics, e.g. {leaks[:3]}"
