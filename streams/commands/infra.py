"""``leadflow infra up|down|status``: the local Kafka broker and Postgres cluster."""

from __future__ import annotations

import sys
import time

import click

from sinks.migrate import apply_migrations
from streams.infra.kafka import LocalKafka
from streams.infra.postgres import LocalPostgres
from streams.settings import get_settings

__all__ = ["infra"]


@click.group()
def infra() -> None:
    """Run Kafka (KRaft, from Maven jars) and Postgres locally, without Docker.

    LEADFLOW_KAFKA_BOOTSTRAP and LEADFLOW_DATABASE_URL point leadflow at
    existing services instead; then nothing is started.
    """


@infra.command()
@click.option("--no-postgres", is_flag=True, help="Start only Kafka.")
def up(no_postgres: bool) -> None:
    """Start what is not running yet (reuses running services), then migrate."""
    settings = get_settings()
    started = time.monotonic()
    click.echo(f"kafka:    {LocalKafka(settings).up()}")
    if not no_postgres:
        click.echo(f"postgres: {LocalPostgres(settings).up()}")
        applied = apply_migrations(settings.dsn)
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none pending"
        click.echo(f"schema:   migrations applied: {names}")
    click.echo(f"infra up in {time.monotonic() - started:.1f} s")


@infra.command()
def down() -> None:
    """Stop the local broker and Postgres (no-op for external services)."""
    settings = get_settings()
    click.echo(f"kafka:    {LocalKafka(settings).down()}")
    click.echo(f"postgres: {LocalPostgres(settings).down()}")


@infra.command()
def status() -> None:
    """Report each service; exit 1 when any is not running."""
    settings = get_settings()
    statuses = [LocalKafka(settings).status(), LocalPostgres(settings).status()]
    for st in statuses:
        click.echo(st.line())
    if not all(st.running for st in statuses):
        sys.exit(1)
