"""``leadflow db migrate|status``: versioned schema migrations."""

from __future__ import annotations

import click

from sinks.migrate import apply_migrations, discover, pending
from streams.settings import get_settings

__all__ = ["db"]


@click.group()
def db() -> None:
    """Postgres schema migrations (plain SQL files in sinks/migrations)."""


@db.command()
def migrate() -> None:
    """Apply pending migrations."""
    applied = apply_migrations(get_settings().dsn)
    for m in applied:
        click.echo(f"applied {m.version:04d}_{m.name}")
    click.echo(f"{len(applied)} applied; schema is current")


@db.command()
def status() -> None:
    """List migrations and whether each is applied."""
    waiting = {m.version for m in pending(get_settings().dsn)}
    for m in discover():
        click.echo(
            f"{m.version:04d}_{m.name:<30} {'pending' if m.version in waiting else 'applied'}"
        )
