"""``leadflow campaign create|validate|list|show|pause|resume|cancel``: stored campaigns.

Campaign files are described in docs/CAMPAIGNS.md. Problems (an invalid
file, an unknown id, an illegal status change) are
:class:`~streams.errors.LeadflowError` subclasses, which ``leadflow`` prints
without a traceback, exiting with status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import yaml

from sinks.campaigns import CampaignStatus, CampaignStore, StoredCampaign
from streams.campaign import format_duration, load_campaign
from streams.settings import get_settings

__all__ = ["campaign", "dump_yaml"]


def _store() -> CampaignStore:
    return CampaignStore(get_settings().dsn)


class _Dumper(yaml.SafeDumper):
    """Indented lists and block style for multi-line text, so templates read as written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(data: Any) -> str:
    """``data`` as YAML in file order, multi-line strings as ``|`` blocks."""
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False
    )


def _summary(stored: StoredCampaign) -> str:
    c = stored.campaign
    steps = ", ".join(f"{t.channel}+{format_duration(c.offset_of(t.index))}" for t in c.sequence)
    return f"{c.id} ({c.name}): {stored.status}; touches {steps}"


@click.group()
def campaign() -> None:
    """Create and manage campaigns stored in Postgres (see docs/CAMPAIGNS.md)."""


@campaign.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def create(file: Path) -> None:
    """Validate FILE (YAML) and store it as a new, active campaign."""
    stored = _store().create(load_campaign(file))
    click.echo(f"created {_summary(stored)}")


@campaign.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check FILE and report every problem; stores nothing, needs no database."""
    c = load_campaign(file)
    click.echo(f"{file}: campaign {c.id} is valid ({len(c.sequence)} touches)")


@campaign.command("list")
@click.option(
    "--status",
    type=click.Choice([s.value for s in CampaignStatus]),
    help="Only campaigns with this status.",
)
def list_(status: str | None) -> None:
    """List stored campaigns, oldest first."""
    rows = _store().list(status)
    if not rows:
        click.echo("no campaigns")
        return
    table = [("ID", "STATUS", "TOUCHES", "CREATED", "NAME")]
    for s in rows:
        table.append(
            (
                s.id,
                s.status.value,
                str(len(s.campaign.sequence)),
                s.created_at.strftime("%Y-%m-%d %H:%M"),
                s.name,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        click.echo("  ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[4]]))


@campaign.command()
@click.argument("campaign_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with status and timestamps.")
def show(campaign_id: str, as_json: bool) -> None:
    """Print campaign CAMPAIGN_ID: YAML in the file format (with every default), or JSON."""
    stored = _store().get(campaign_id)
    if as_json:
        doc = {
            "id": stored.id,
            "status": stored.status.value,
            "created_at": stored.created_at.isoformat(),
            "updated_at": stored.updated_at.isoformat(),
            "config": stored.campaign.to_dict(),
        }
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    click.echo(f"# status: {stored.status.value}")
    click.echo(f"# created: {stored.created_at.isoformat()}")
    click.echo(f"# updated: {stored.updated_at.isoformat()}")
    click.echo(dump_yaml(stored.campaign.to_dict()), nl=False)


def _change(campaign_id: str, status: CampaignStatus) -> None:
    store = _store()
    before = store.get(campaign_id).status
    after = store.set_status(campaign_id, status)
    click.echo(f"campaign {campaign_id}: {before.value} -> {after.status.value}")


@campaign.command()
@click.argument("campaign_id")
def pause(campaign_id: str) -> None:
    """Pause an active campaign: no new touches go out until it is resumed."""
    _change(campaign_id, CampaignStatus.PAUSED)


@campaign.command()
@click.argument("campaign_id")
def resume(campaign_id: str) -> None:
    """Resume a paused campaign."""
    _change(campaign_id, CampaignStatus.ACTIVE)


@campaign.command()
@click.argument("campaign_id")
def cancel(campaign_id: str) -> None:
    """Cancel an active or paused campaign for good (final)."""
    _change(campaign_id, CampaignStatus.CANCELLED)
