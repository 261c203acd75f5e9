"""``leadflow campaign create|validate|list|show|pause|resume|cancel|archive|purge``.

Campaign files are described in docs/CAMPAIGNS.md; ``archive`` and
``purge`` (retention) in docs/RETENTION.md. Problems (an invalid file, an
unknown id, an illegal status change, a refused purge) are
:class:`~streams.errors.LeadflowError` subclasses, which ``leadflow`` prints
without a traceback, exiting with status 2.

``purge`` also forgets the campaign's leads in the state table: it writes a
tombstone (a null value) for each of the campaign's keys
(``campaign\x1flead``) in the compacted changelog topic
``<prefix>leadflow-lead-state-changelog``, on the partition each key is on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import yaml
from confluent_kafka import KafkaError, Message, Producer

from sinks.campaigns import (
    CampaignStatus,
    CampaignStore,
    PurgeResult,
    StoredCampaign,
)
from streams.campaign import format_duration, load_campaign
from streams.errors import KafkaUnavailableError, TopicError
from streams.kafka_config import confluent_config
from streams.settings import Settings, get_settings
from streams.tail import lead_state_changelog_topic, read_records

__all__ = ["campaign", "changelog_keys", "dump_yaml", "tombstone_changelog"]


def _settings() -> Settings:
    """The settings a test passed as the click context's ``obj``, else the environment's."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and isinstance(ctx.obj, Settings):
        return ctx.obj
    return get_settings()


def _store() -> CampaignStore:
    return CampaignStore(_settings().dsn)


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


# --- retention ---------------------------------------------------------------------


@campaign.command()
@click.argument("campaign_id")
@click.option("--dry-run", is_flag=True, help="Check and count only; change nothing.")
def archive(campaign_id: str, dry_run: bool) -> None:
    """Archive a finished campaign: read-only for good, its stats and history kept.

    Finished means cancelled or completed, or active/paused with every lead
    in a terminal state, no touch pending and no send in flight. Deletes
    its pending touches and the enrichment cache rows only it used.
    """
    result = _store().archive(campaign_id, dry_run=dry_run)
    counts = ", ".join(f"{table} {rows}" for table, rows in result.deleted.items())
    if dry_run:
        click.echo(
            f"campaign {campaign_id} can be archived ({result.previous.value} -> archived); "
            f"would delete: {counts}"
        )
        click.echo("dry run: nothing changed")
        return
    click.echo(f"campaign {campaign_id}: {result.previous.value} -> archived")
    click.echo(f"deleted: {counts}; leads, timelines, send ledger and stats kept")


@campaign.command()
@click.argument("campaign_id")
@click.option("--dry-run", is_flag=True, help="Print the rows per table to delete (the default).")
@click.option(
    "--yes", is_flag=True, help="Delete them (one transaction), and tombstone the changelog."
)
@click.option("--force", is_flag=True, help="Allow a cancelled campaign that was not archived.")
def purge(campaign_id: str, dry_run: bool, yes: bool, force: bool) -> None:
    """Delete every row of an archived campaign from every table; opt-outs are kept.

    Without --yes it only prints what would be deleted. With --yes, the
    campaign's keys in the lead-state changelog are tombstoned first, then
    the rows are deleted in one transaction. A running worker keeps those
    leads in memory until it restarts.
    """
    if dry_run and yes:
        raise click.UsageError("use --dry-run or --yes, not both")
    settings = _settings()
    store = CampaignStore(settings.dsn)
    plan = store.purge(campaign_id, force=force, dry_run=True)  # refuses before Kafka is read
    topic = lead_state_changelog_topic(settings)
    keys = changelog_keys(settings, campaign_id)
    if not yes:
        _print_purge(plan, "would delete")
        click.echo(f"changelog {topic}: {len(keys)} keys would be tombstoned")
        click.echo("dry run: nothing changed; run again with --yes to purge")
        return
    tombstone_changelog(settings, keys)
    done = store.purge(campaign_id, force=force, dry_run=False)
    _print_purge(done, "deleted")
    click.echo(
        f"changelog {topic}: {len(keys)} keys tombstoned; a running worker keeps "
        "these leads in memory until it restarts"
    )


def _print_purge(result: PurgeResult, verb: str) -> None:
    click.echo(f"campaign {result.campaign_id} ({result.status.value}): {verb}")
    width = max(len(t) for t in [*result.deleted, "total"])
    for table, rows in result.deleted.items():
        click.echo(f"  {table:<{width}}  {rows:>8}")
    click.echo(f"  {'total':<{width}}  {result.total:>8}")
    for table, rows in result.kept.items():
        click.echo(f"kept: {table} {rows} rows (compliance records survive a purge)")


def changelog_keys(settings: Settings, campaign_id: str) -> set[tuple[bytes, int]]:
    """(key, partition) of every live key of ``campaign_id`` in the lead-state changelog.

    Live means its latest record on that partition is not a tombstone. An
    absent changelog topic (no worker ever ran with this prefix) has none.
    """
    prefix = campaign_id.encode() + b"\x1f"
    live: set[tuple[bytes, int]] = set()
    topic = lead_state_changelog_topic(settings)
    try:
        for record in read_records(settings.bootstrap_servers, topic):
            if record.key is None or not record.key.startswith(prefix):
                continue
            if record.value is None:
                live.discard((record.key, record.partition))
            else:
                live.add((record.key, record.partition))
    except TopicError:
        return set()
    return live


def tombstone_changelog(
    settings: Settings, keys: Iterable[tuple[bytes, int]], timeout_s: float = 30.0
) -> int:
    """Write a tombstone for each (key, partition) to the lead-state changelog; returns how many.

    Raises :class:`KafkaUnavailableError` unless every one is acknowledged.
    """
    topic = lead_state_changelog_topic(settings)
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err.str())

    producer = Producer(
        {
            **confluent_config(),
            "bootstrap.servers": settings.bootstrap_servers,
            "acks": "all",
            "log_level": 3,
        }
    )
    count = 0
    for key, partition in sorted(keys):
        while True:
            try:
                producer.produce(
                    topic, key=key, value=None, partition=partition, on_delivery=delivered
                )
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.5)
        count += 1
    left = producer.flush(timeout_s)
    if left or failures:
        detail = failures[0] if failures else f"{left} not acknowledged in {timeout_s:.0f} s"
        raise KafkaUnavailableError(f"cannot tombstone {topic}: {detail}; nothing was purged")
    return count
