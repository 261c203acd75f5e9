"""``leadflow config``: every setting, its environment variable and default."""

from __future__ import annotations

import importlib
from typing import Any

import click

from streams.settings import settings_table

__all__ = ["SETTINGS_CLASSES", "all_settings_rows", "config", "markdown"]

#: (section title, "module:Class") of every settings dataclass in the project.
SETTINGS_CLASSES: tuple[tuple[str, str], ...] = (
    ("Core: services, topics, worker", "streams.settings:Settings"),
    ("Providers: adapters, limits, breakers, retries", "providers.settings:ProviderSettings"),
    ("Provider simulator (`leadflow sim`)", "simulator.config:SimSettings"),
    ("Liveness: partition watchdog and sequence sweeper", "streams.watchdog:WatchdogSettings"),
    ("Kafka security (SASL/TLS)", "streams.kafka_config:KafkaSecuritySettings"),
    ("Campaign health (`leadflow health`, `/health`)", "streams.health:HealthSettings"),
    ("Metrics (/metrics background polls)", "streams.metrics:MetricsSettings"),
    ("Fault injection (tests and `make chaos` only)", "agents.faults:FaultSettings"),
)


def _load(target: str) -> type[Any]:
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type)
    return cls


def all_settings_rows() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(section, rows) for every settings class."""
    return [(title, settings_table(_load(target))) for title, target in SETTINGS_CLASSES]


def markdown() -> str:
    """Every setting as Markdown tables (docs/CONFIGURATION.md is made from this)."""
    parts: list[str] = []
    for title, rows in all_settings_rows():
        parts += [f"## {title}", "", "| Variable | Default | Meaning |", "|---|---|---|"]
        parts += [f"| `{env}` | `{default}` | {doc} |" for env, default, doc in rows]
        parts.append("")
    return "\n".join(parts)


@click.command()
@click.option("--markdown", "as_markdown", is_flag=True, help="Print Markdown tables.")
def config(as_markdown: bool) -> None:
    """Print every leadflow setting with its default."""
    if as_markdown:
        click.echo(markdown())
        return
    for title, rows in all_settings_rows():
        click.echo(f"# {title}")
        for env, default, doc in rows:
            click.echo(f"{env}={default}\n    {doc}")
