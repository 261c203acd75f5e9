"""``leadflow config``: every setting, its environment variable and default."""

from __future__ import annotations

import click

from streams.settings import settings_table

__all__ = ["config", "markdown_table"]


def markdown_table() -> str:
    """The settings as a Markdown table (docs/CONFIGURATION.md is made from this)."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for env, default, doc in settings_table():
        lines.append(f"| `{env}` | `{default}` | {doc} |")
    return "\n".join(lines)


@click.command()
@click.option("--markdown", is_flag=True, help="Print a Markdown table.")
def config(markdown: bool) -> None:
    """Print leadflow's settings with their defaults."""
    if markdown:
        click.echo(markdown_table())
        return
    for env, default, doc in settings_table():
        click.echo(f"{env}={default}\n    {doc}")
