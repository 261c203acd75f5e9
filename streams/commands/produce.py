"""``leadflow produce --campaign ID FILE``: publish a CSV or JSON Lines file to ``raw``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import psycopg

from streams.errors import ConfigError, DatabaseError
from streams.ingest import IngestSummary, ingest_file
from streams.settings import Settings, get_settings

__all__ = ["produce"]


def _require_campaign(settings: Settings, campaign_id: str) -> None:
    try:
        with psycopg.connect(settings.dsn, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT status FROM campaigns WHERE campaign_id = %s", (campaign_id,)
            ).fetchone()
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot check campaign {campaign_id!r}: {exc}".strip()) from exc
    if row is None:
        raise ConfigError(
            f"campaign {campaign_id!r} does not exist; create it with `leadflow campaign create`"
        )


def _bar(done: int, total: int, summary: IngestSummary) -> None:
    width = 30
    frac = done / total if total else 1.0
    filled = int(frac * width)
    sys.stderr.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {frac:6.1%}  "
        f"{summary.published:,} published  {summary.rejected:,} rejected"
    )
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


@click.command()
@click.option("--campaign", "campaign_id", required=True, help="Campaign id (must exist).")
@click.option(
    "--rejects",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write rejected rows (default FILE.rejects.jsonl).",
)
@click.option("--no-check", is_flag=True, help="Do not check that the campaign exists.")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def produce(campaign_id: str, rejects: Path | None, no_check: bool, file: Path) -> None:
    """Publish FILE (.csv with a header, or .jsonl) to the raw topic.

    Columns: lead_id (optional), first_name, last_name, email, phone, company,
    title, timezone, country, state; other columns become attributes. Rows
    with neither a usable phone nor a usable email go to the rejects file
    with their line number and reason.
    """
    settings = get_settings()
    if not no_check:
        _require_campaign(settings, campaign_id)
    progress = _bar if sys.stderr.isatty() else None
    summary = ingest_file(settings, campaign_id, file, rejects_path=rejects, progress=progress)
    for line in summary.lines():
        click.echo(line)
