"""``leadflow demo``: the main job end to end on local services.

Today it stores the example campaign (once), generates 10,000 leads (5 %
invalid, 3 % duplicates) and publishes them to ``raw`` with rejects
reported. The pipeline stages (issue 4) extend it to run the worker and the
simulator and print the final campaign report.
"""

from __future__ import annotations

from pathlib import Path

import click

from sinks.campaigns import CampaignNotFoundError, CampaignStore
from streams.campaign import load_campaign
from streams.ingest import ingest_file
from streams.leadgen import write_csv
from streams.settings import REPO_ROOT, get_settings

__all__ = ["demo"]

EXAMPLE = REPO_ROOT / "examples" / "campaign.yaml"


@click.command()
@click.option("--leads", default=10_000, show_default=True, help="How many leads to generate.")
@click.option(
    "--campaign-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=EXAMPLE,
    show_default=True,
)
def demo(leads: int, campaign_file: Path) -> None:
    """Store the example campaign, generate leads and publish them to raw."""
    settings = get_settings()
    campaign = load_campaign(campaign_file)
    store = CampaignStore(settings.dsn)
    try:
        stored = store.get(campaign.id)
        click.echo(f"campaign {campaign.id}: already stored ({stored.status})")
    except CampaignNotFoundError:
        store.create(campaign)
        click.echo(f"campaign {campaign.id}: created from {campaign_file.name}")
    folder = settings.home_dir / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    path = write_csv(folder / f"leads-{leads}.csv", leads)
    click.echo(f"generated {leads} leads in {path}")
    summary = ingest_file(settings, campaign.id, path)
    for line in summary.lines():
        click.echo(line)
