"""A redrive of fixed dead letters completes those leads, and a second redrive changes nothing.

The failure is a real one an operator can fix: leads are published for a
campaign before anyone stored it, so the enrich stage dead-letters every one
of them (``unknown_campaign``). The fix is to store the campaign; then
``leadflow dlq redrive`` sends them through the pipeline again and they run
their (two-touch) sequence to the end. Leads of a campaign that is still
missing fail again and come back as dead letters with attempt 2 and their
first failure in the history. Redriving again, plain or ``--again``, sends
nothing twice.

Real Kafka, Postgres, the simulator and one worker process (LocalRun).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from sinks.campaigns import CampaignStore
from streams.admin import ensure_topics
from streams.campaign import load_campaign
from streams.commands.dlq import dlq
from streams.dead_letters import DeadLetter
from streams.dlq import DeadLetterFilter, redrive, select_dead_letters
from streams.ingest import ingest_file
from streams.invariants import check_campaign
from streams.lag import stage_lag
from streams.leadgen import LeadMix, write_csv
from streams.orchestrate import LocalRun
from streams.settings import REPO_ROOT, Settings
from streams.state_machine import TERMINAL

pytestmark = pytest.mark.slow
RATES = {f"LEADFLOW_{c}_RATE": "0" for c in ("SMS", "VOICE", "EMAIL", "ENRICH")}
LEADS = 30
GHOST_LEADS = 5


async def _wait_for(
    what: str, probe: Callable[[], list[DeadLetter]], count: int, timeout_s: float = 40
) -> list[DeadLetter]:
    deadline = time.monotonic() + timeout_s
    found: list[DeadLetter] = []
    while time.monotonic() < deadline:
        found = probe()
        if len(found) >= count:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: {len(found)} of {count} after {timeout_s:.0f} s")


async def _wait_idle(run: LocalRun, settings: Settings, timeout_s: float = 30) -> None:
    """Until the worker has committed past everything on every input topic."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run.check_alive()
        lag = stage_lag(settings)
        if all(p.lag == 0 and p.committed is not None for p in lag["enrich"]) and all(
            p.lag == 0 for rows in lag.values() for p in rows
        ):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"worker still busy after {timeout_s:.0f} s: {stage_lag(settings)}")


async def test_redrive_of_fixed_dead_letters_completes_those_leads(
    isolated: tuple[Settings, dict[str, str]], dsn: str, tmp_path: Path
) -> None:
    settings, subprocess_env = isolated
    example = load_campaign(REPO_ROOT / "examples" / "campaign.yaml")
    campaign = replace(example, id=f"rdv-{uuid.uuid4().hex[:8]}", sequence=example.sequence[:2])
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"  # never stored: its leads keep failing
    ensure_topics(settings)
    ours = DeadLetterFilter(campaigns=frozenset({campaign.id}))
    ghosts = DeadLetterFilter(campaigns=frozenset({ghost}))
    cli = CliRunner()
    run = LocalRun(settings, tmp_path, {**subprocess_env, **RATES}, time_scale=20000)
    try:
        await run.start_sim()
        run.start_worker()
        leads = write_csv(tmp_path / "leads.csv", LEADS, seed=5, mix=LeadMix(0.0, 0.0))
        summary = ingest_file(settings, campaign.id, leads)
        more = write_csv(tmp_path / "ghost.csv", GHOST_LEADS, seed=6, mix=LeadMix(0.0, 0.0))
        assert ingest_file(settings, ghost, more).published == GHOST_LEADS
        assert summary.published == LEADS

        # 1. Every lead dead-letters: the campaign does not exist yet.
        dead = await _wait_for(
            "dead letters", lambda: select_dead_letters(settings, ours), LEADS, timeout_s=60
        )
        await _wait_for("ghost dead letters", lambda: select_dead_letters(settings, ghosts), 5)
        assert {(d.stage, d.reason, d.attempt) for d in dead} == {("enrich", "unknown_campaign", 1)}
        assert run.states(campaign.id) == Counter()
        async with aiohttp.ClientSession() as http:
            assert await run.messages(http, campaign.id) == []

        # 2. The fix, then the redrive (both campaigns: the ghost's leads fail again).
        CampaignStore(dsn).create(campaign)
        first = cli.invoke(dlq, ["redrive", "--reason", "unknown_campaign"], obj=settings)
        assert first.exit_code == 0, first.output
        assert f"redriven: {LEADS + GHOST_LEADS}" in first.stdout

        # 3. The fixed leads run their sequence to the end; each touch goes out once.
        await run.drive(campaign.id, LEADS, timeout_s=60)
        async with aiohttp.ClientSession() as http:
            messages = await run.messages(http, campaign.id)
        states = run.states(campaign.id)
        assert sum(states.values()) == LEADS
        assert set(states) <= {s.value for s in TERMINAL}, states
        assert states["completed"] > 0, states
        sends = Counter((m["lead_id"], int(m["touch"])) for m in messages if int(m["touch"]) >= 1)
        assert sends and max(sends.values()) == 1
        assert {lead for lead, _ in sends} <= {d.lead_id for d in dead}
        checks = check_campaign(dsn, campaign.id, messages, accepted_leads=None)
        assert all(c.ok for c in checks), "\n".join(c.line() for c in checks)

        # 4. The ghost campaign's leads failed again, with their history.
        again = await _wait_for(
            "second failures",
            lambda: [d for d in select_dead_letters(settings, ghosts) if d.attempt == 2],
            GHOST_LEADS,
        )
        for d in again:
            assert d.reason == "unknown_campaign"
            assert [(h["stage"], h["reason"]) for h in d.history] == [
                ("enrich", "unknown_campaign")
            ]

        # 5. Redriving again sends nothing: skipped as done, and even when forced
        #    (--again) the lead-state table and the send ledger stop every re-send.
        second = cli.invoke(dlq, ["redrive", "--campaign", campaign.id], obj=settings)
        assert second.exit_code == 0, second.output
        assert "redriven: 0" in second.stdout
        assert f"skipped, redriven before: {LEADS}" in second.stdout
        forced = redrive(settings, select_dead_letters(settings, ours), again=True, rate=500)
        assert forced.total == LEADS
        await _wait_idle(run, settings)
        async with aiohttp.ClientSession() as http:
            after = await run.messages(http, campaign.id)
        assert len(after) == len(messages)
        assert run.states(campaign.id) == states
    finally:
        run.close()
