"""``leadflow topics [--check]``: create catalog topics, or report drift."""

from __future__ import annotations

import sys

import click

from streams.admin import check_topics, ensure_topics
from streams.kafka_config import check_connection
from streams.settings import get_settings
from streams.topics import CATALOG

__all__ = ["topics"]


@click.command()
@click.option("--check", is_flag=True, help="Only report drift; exit 1 on any.")
@click.option("--list", "list_", is_flag=True, help="Print the catalog and exit.")
def topics(check: bool, list_: bool) -> None:
    """Create the catalog's missing topics, or check the live ones against it."""
    settings = get_settings()
    if list_:
        for spec in CATALOG:
            days = spec.retention_ms / 86_400_000
            click.echo(
                f"{spec.full_name(settings):<16} {spec.partition_count(settings):>3} partitions  "
                f"{spec.cleanup_policy:<8} {days:g} d  {spec.value_schema}"
            )
        return
    check_connection(settings.bootstrap_servers)  # a refused login fails here, in one line
    if check:
        drift = check_topics(settings)
        for item in drift:
            click.echo(f"drift: {item.line()}")
        if drift:
            click.echo(f"{len(drift)} problem(s); run `leadflow topics` to create missing topics")
            sys.exit(1)
        click.echo(f"ok: {len(CATALOG)} topics match the catalog")
        return
    created = ensure_topics(settings)
    for name in created:
        click.echo(f"created {name}")
    click.echo(f"{len(created)} created, {len(CATALOG) - len(created)} already present")
