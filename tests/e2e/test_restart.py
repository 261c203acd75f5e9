"""Stop the worker mid-campaign, start it again: the campaign completes, invariants hold."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import aiohttp
import psycopg
import pytest

from sinks.campaigns import CampaignStore
from streams.admin import ensure_topics
from streams.campaign import Campaign
from streams.ingest import ingest_file
from streams.invariants import check_campaign, read_state_changelog
from streams.leadgen import LeadMix, write_csv
from streams.orchestrate import LocalRun
from streams.settings import Settings

pytestmark = pytest.mark.slow
RATES = {f"LEADFLOW_{c}_RATE": "0" for c in ("SMS", "VOICE", "EMAIL", "ENRICH")}


async def test_worker_restart_mid_campaign(
    isolated: tuple[Settings, dict[str, str]],
    dsn: str,
    tmp_path: Path,
    example_campaign: Callable[..., Campaign],
) -> None:
    settings, subprocess_env = isolated
    campaign = example_campaign("rs", gap=timedelta(hours=3))
    CampaignStore(dsn).create(campaign)
    ensure_topics(settings)
    run = LocalRun(settings, tmp_path, {**subprocess_env, **RATES}, time_scale=20000)
    try:
        await run.start_sim()
        run.start_worker()
        path = write_csv(tmp_path / "leads.csv", 1000, seed=33, mix=LeadMix(0.0, 0.0))
        summary = ingest_file(settings, campaign.id, path)
        # Stop the worker once the campaign is well under way (touch 2 going out).
        deadline = time.monotonic() + 120
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                run.check_alive()
                sent = await run.messages(http, campaign.id)
                if sum(1 for m in sent if int(m["touch"]) == 2) >= 100:
                    break
                await asyncio.sleep(0.3)
            else:
                pytest.fail(
                    f"the campaign never reached touch 2: {_diagnose(run, dsn, campaign.id)}"
                )
            run.stop_worker(0, signal.SIGTERM)
            stopped_at = len(await run.messages(http, campaign.id))
            states_at_stop = run.states(campaign.id)
            run.start_worker(0)
            try:
                await run.drive(campaign.id, summary.published, timeout_s=120)
            except Exception as exc:
                pytest.fail(f"{exc}\n{_diagnose(run, dsn, campaign.id)}")
            messages = await run.messages(http, campaign.id)
    finally:
        run.close()

    # It was really mid-campaign, and it really went on after the restart.
    assert states_at_stop.get("in_sequence", 0) > 0, states_at_stop
    assert len(messages) > stopped_at
    changelog = read_state_changelog(
        settings.bootstrap_servers, settings.topic_name("leadflow-lead-state-changelog")
    )
    checks = check_campaign(dsn, campaign.id, messages, accepted_leads=None, changelog=changelog)
    assert all(c.ok for c in checks), "\n".join(c.line() for c in checks)
    final = run.states(campaign.id)
    assert sum(final.values()) == summary.published
    # A graceful stop finishes the batch in flight: no send is left unaccounted.
    assert final.get("reconcile", 0) == 0, final
    assert final.get("completed", 0) > 0


def _diagnose(run: LocalRun, dsn: str, campaign_id: str) -> str:
    """Where a stuck campaign is: states, the touch queue, the worker's last words."""
    with psycopg.connect(dsn) as conn:
        queue = conn.execute(
            "SELECT touch, count(*), count(*) FILTER (WHERE emitted_at IS NULL), min(due_at) "
            "FROM pending_touches WHERE campaign_id = %s GROUP BY touch",
            (campaign_id,),
        ).fetchall()
        clock = conn.execute("SELECT * FROM clock_anchor").fetchall()
        stuck = conn.execute(
            "SELECT l.lead_id, l.state, l.touch, "
            "  (SELECT array_agg(p.touch || ':' || coalesce(p.emitted_at::text, '-')) "
            "     FROM pending_touches p WHERE p.campaign_id = l.campaign_id "
            "      AND p.lead_id = l.lead_id), "
            "  (SELECT array_agg(s.touch || ':' || s.status) FROM send_ledger s "
            "    WHERE s.campaign_id = l.campaign_id AND s.lead_id = l.lead_id) "
            "FROM leads l WHERE l.campaign_id = %s AND l.state IN ('in_sequence', 'reconcile') "
            "LIMIT 5",
            (campaign_id,),
        ).fetchall()
    log = (run.workdir / "worker0.log").read_text(errors="replace")
    tail = "\n".join(line for line in log.splitlines() if "producer buffer" not in line)[-1500:]
    return (
        f"states={dict(run.states(campaign_id))} queue={queue} clock={clock}\n"
        f"stuck (lead, state, touch, queued touch:emitted, ledger touch:status): {stuck}\n{tail}"
    )
