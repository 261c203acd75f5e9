"""``leadflow health [--campaign ID] [--json]``: campaign and pipeline health, usable as a probe.

It reads Kafka (consumer lag per stage, sampled twice ``--sample-s`` apart)
and Postgres (lead states, the touch queue, transitions, dead letters)
itself, and asks the worker's ``/health`` (``--worker-url``) for what only
the worker knows: circuit-breaker states, and how long it has seen a stage
stalled. docs/HEALTH.md describes every figure and the checks.

Exit status: 0 healthy, 1 unhealthy (any problem, an unreachable Kafka,
Postgres or worker included), 2 on an error such as an unknown campaign id or
bad configuration (a :class:`~streams.errors.LeadflowError`, printed by
``leadflow`` on one line).
"""

from __future__ import annotations

import json
import sys

import click

from providers.settings import ProviderSettings
from streams.health import HealthSettings, collect, fetch_worker, render_text
from streams.settings import Settings

__all__ = ["health"]


@click.command()
@click.option(
    "--campaign",
    "campaign_id",
    metavar="ID",
    help="Report this campaign (any status). Default: every active campaign.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (as /health).")
@click.option(
    "--worker-url",
    metavar="URL",
    help="Worker web server to ask for breaker states "
    "(default: $LEADFLOW_HEALTH_WORKER_URL, else http://127.0.0.1:$LEADFLOW_WEB_PORT).",
)
@click.option(
    "--no-worker",
    is_flag=True,
    help="Do not ask a worker: breakers are reported unknown and no worker is required.",
)
@click.option(
    "--sample-s",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Seconds between the two lag samples (default $LEADFLOW_HEALTH_SAMPLE_S; 0 = one).",
)
def health(
    campaign_id: str | None,
    as_json: bool,
    worker_url: str | None,
    no_worker: bool,
    sample_s: float | None,
) -> None:
    """Report queue depth, lead counts, completion rate, dead letters, breakers and ETA.

    Exits 0 when healthy and 1 when not (see docs/HEALTH.md), so it can
    serve as a liveness or readiness probe.
    """
    settings = Settings.from_env()
    hs = HealthSettings.from_env()
    providers = ProviderSettings.from_env()
    url = worker_url or hs.default_worker_url(settings)

    # The worker builds its own report before answering: give it a few timeouts' time.
    report = collect(
        settings,
        hs,
        providers=providers,
        campaign_id=campaign_id,
        sample_s=hs.sample_s if sample_s is None else sample_s,
        worker=None if no_worker else (lambda: fetch_worker(url, hs.timeout_s * 3, campaign_id)),
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in render_text(report):
            click.echo(line)
    if report.exit_code:
        sys.exit(report.exit_code)  # SystemExit: the code survives any caller of main()
