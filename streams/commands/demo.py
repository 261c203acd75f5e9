"""``leadflow demo``: the main job, end to end, on local Kafka, Postgres and the simulator.

It stores the example campaign under a fresh id, creates topics of its own
for the run (prefix ``<campaign id>-``), starts ``leadflow sim`` and a
worker, generates and publishes 10,000 leads (5 % invalid, 3 % duplicates),
has 2 % of them reply and 1 % text STOP after their first touch, runs the
whole sequence on a fast campaign clock (a week in about a minute), waits
until every lead has ended, prints the report and the invariant checks, and
stops what it started.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import click

from sinks.campaigns import CampaignStore
from streams.admin import ensure_topics
from streams.campaign import load_campaign
from streams.dead_letters import read_dead_letters
from streams.ingest import ingest_file
from streams.invariants import check_campaign
from streams.leadgen import LeadMix, write_csv
from streams.orchestrate import LocalRun
from streams.settings import REPO_ROOT, get_settings

__all__ = ["demo"]

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"
_RATE_VARS = (
    "LEADFLOW_SMS_RATE",
    "LEADFLOW_VOICE_RATE",
    "LEADFLOW_EMAIL_RATE",
    "LEADFLOW_ENRICH_RATE",
)


@click.command()
@click.option("--leads", default=10_000, show_default=True, help="How many leads to generate.")
@click.option(
    "--time-scale",
    default=12_000.0,
    show_default=True,
    help="Campaign clock speed (12000: a week in under a minute).",
)
@click.option(
    "--campaign-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=EXAMPLE,
    show_default=True,
)
def demo(leads: int, time_scale: float, campaign_file: Path) -> None:
    """Run a whole campaign on local services and print the report."""
    sys.exit(asyncio.run(_demo(leads, time_scale, campaign_file)))


async def _demo(leads: int, time_scale: float, campaign_file: Path) -> int:
    settings = get_settings()
    stamp = datetime.now(UTC).strftime("%m%d-%H%M%S")
    campaign = replace(load_campaign(campaign_file), id=f"demo-{stamp}-{uuid.uuid4().hex[:4]}")
    CampaignStore(settings.dsn).create(campaign)
    # Each run is self-contained: its own topics, consumer group and state
    # changelog (a prefix named after the campaign), like the end-to-end tests.
    settings = replace(settings, topic_prefix=f"{settings.topic_prefix}{campaign.id}-")
    ensure_topics(settings)
    folder = settings.home_dir / "demo" / campaign.id
    folder.mkdir(parents=True, exist_ok=True)
    click.echo(f"campaign {campaign.id} stored; files in {folder}")
    env = {**os.environ, "LEADFLOW_TOPIC_PREFIX": settings.topic_prefix}
    for var in _RATE_VARS:  # the simulator has no limits; lift ours unless set
        env.setdefault(var, "0")
    run = LocalRun(settings, folder, env, time_scale=time_scale)
    try:
        await run.start_sim()
        run.start_worker()
        click.echo(f"simulator at {run.sim_url}; worker started (logs in {folder})")
        path = write_csv(folder / "leads.csv", leads, mix=LeadMix(invalid=0.05, duplicates=0.03))
        started = time.monotonic()
        summary = ingest_file(settings, campaign.id, path)
        for line in summary.lines():
            click.echo(f"  {line}")
        accepted = _accepted_ids(path, summary.rejects_file)
        replies = {lead: "reply" for lead in accepted[: len(accepted) // 50]}
        replies |= {lead: "opt_out" for lead in accepted[-(len(accepted) // 100) :]}
        first_touch: list[float] = []

        async def watch_first_touch() -> None:
            async with aiohttp.ClientSession() as http:
                while not first_touch:
                    if await run.messages(http, campaign.id):
                        first_touch.append(time.monotonic() - started)
                    await asyncio.sleep(0.2)

        watcher = asyncio.create_task(watch_first_touch())

        def progress(states: Counter[str]) -> None:
            done = sum(
                n
                for s, n in states.items()
                if s not in ("new", "enriched", "qualified", "in_sequence")
            )
            click.echo(f"\r  {done:>6} of {summary.published} leads ended", nl=False, err=True)

        await run.drive(
            campaign.id,
            summary.published,
            replies=replies,
            timeout_s=600,
            progress=progress if sys.stderr.isatty() else None,
        )
        watcher.cancel()
        seconds = time.monotonic() - started
        async with aiohttp.ClientSession() as http:
            messages = await run.messages(http, campaign.id)
    finally:
        run.close()
    dead = Counter(
        d["reason"] for d in read_dead_letters(settings) if d.get("campaign_id") == campaign.id
    )
    report = run.report(
        campaign.id, summary.published, seconds, dead, first_touch[0] if first_touch else None
    )
    click.echo("")
    for line in report.lines():
        click.echo(line)
    checks = check_campaign(settings.dsn, campaign.id, messages, accepted_leads=accepted)
    click.echo("invariants:")
    for check in checks:
        click.echo(f"  {check.line()}")
    return 0 if all(c.ok for c in checks) else 1


def _accepted_ids(path: Path, rejects: Path | None) -> list[str]:
    rejected = set()
    if rejects is not None and rejects.exists():
        rejected = {json.loads(line)["line"] for line in rejects.read_text().splitlines()}
    with path.open(newline="") as fh:
        return [
            row["lead_id"] for n, row in enumerate(csv.DictReader(fh), start=2) if n not in rejected
        ]
