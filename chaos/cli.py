"""``python -m chaos``: run the fault scenarios and print the table.

``make chaos`` runs the full version (10,000 leads per scenario, 20 worker
kills, 3 broker restarts); ``--ci`` runs the small one the test suite uses.
Each scenario gets its own topics and database, removed afterwards unless
``--keep``; worker and simulator logs stay in ``.leadflow/chaos/<run>/``.
The exit status is 1 when any invariant failed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime

import click

from chaos.harness import ensure_services
from chaos.lab import Lab, ScenarioResult, Size, lines_of
from chaos.scenarios import SCENARIOS, run_scenario
from streams.settings import get_settings

__all__ = ["chaos", "main"]


@click.command()
@click.option("--leads", default=10_000, show_default=True, help="Leads per scenario (full run).")
@click.option("--ci", is_flag=True, help="The small version the test suite runs.")
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(list(SCENARIOS)),
    help="Run only these scenarios (repeatable).",
)
@click.option("--keep", is_flag=True, help="Keep each scenario's topics and database.")
def chaos(leads: int, ci: bool, only: tuple[str, ...], keep: bool) -> None:
    """Run the fault-injection scenarios and print scenario, faults and I1-I5 with counts."""
    size = Size.ci() if ci else Size.full(leads)
    sys.exit(asyncio.run(_run(size, list(only) or list(SCENARIOS), keep)))


async def _run(size: Size, names: list[str], keep: bool) -> int:
    settings = get_settings()
    ensure_services(settings)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    workdir = settings.home_dir / "chaos" / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    lab = Lab(settings, dict(os.environ), workdir, infra=settings, cleanup=not keep)
    click.echo(f"{len(names)} scenarios, {size.leads} leads each; logs in {workdir}")
    results: list[ScenarioResult] = []
    for name in names:
        click.echo(f"-- {name}", err=True)
        result = await run_scenario(name, lab, size)
        results.append(result)
        click.echo(result.report(), err=True)
    click.echo("")
    for line in lines_of(results):
        click.echo(line)
    for r in results:
        if r.notes and not r.ok:
            click.echo(f"{r.scenario}: " + "; ".join(r.notes))
    failed = [r for r in results if not r.skipped and not r.ok]
    return 1 if failed else 0


def main() -> None:
    """Entry point of ``python -m chaos``."""
    chaos()
