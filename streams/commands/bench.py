"""``leadflow bench``: measure the pipeline against bare-client baselines (code in ``bench/``).

Runs on the local services (``leadflow infra up``) in a database of its own,
with topics of its own per run, and removes both afterwards::

    leadflow bench --leads 500,2000,10000 --repeat 3 --json
    leadflow bench --scenario rate-limited
    leadflow bench --scenario scheduler
    leadflow bench --report          # docs/BENCHMARKS.md + docs/benchmarks.png from bench/results/

Results go to ``bench/results/<timestamp>-<scenario>-<N>.json``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType

import click

from streams.errors import ConfigError
from streams.settings import REPO_ROOT

__all__ = ["bench"]

if importlib.util.find_spec("bench") is None:  # pragma: no cover - until packaged
    # bench/ lives beside the packages in the checkout (an editable install is assumed)
    sys.path.insert(0, str(REPO_ROOT))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class _EchoHandler(logging.Handler):
    """Progress lines of the benchmark modules, to stderr (whatever stderr is now)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(record.getMessage(), err=True)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "").strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--leads {text!r}: give sizes such as 500,2000,10000") from None
    if not sizes or any(n < 1 for n in sizes):
        raise ConfigError(f"--leads {text!r}: sizes must be positive")
    return sizes


@click.command()
@click.option(
    "--leads",
    default="10000",
    show_default=True,
    help="Campaign sizes, comma-separated (500,2000,10000).",
)
@click.option("--repeat", default=1, show_default=True, help="Runs per size; figures are medians.")
@click.option(
    "--scenario",
    type=click.Choice(["campaign", "rate-limited", "rate-limited-campaign", "scheduler"]),
    default="campaign",
    show_default=True,
    help="campaign: sizes against the baselines; rate-limited: SMS provider limit 100/60 s "
    "on a 60x clock (rate-limited-campaign: the campaign's own SMS rate instead); "
    "scheduler: 1,000,000 pending touches.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--no-baseline", is_flag=True, help="Skip the aiokafka and confluent-kafka runs.")
@click.option("--no-half-load", is_flag=True, help="Skip the half-load latency phase.")
@click.option(
    "--baseline-processes",
    type=click.Choice(["1", "4"]),
    default="1",
    show_default=True,
    help="Run the baseline's four hops in one process or one process each.",
)
@click.option(
    "--pending",
    default=1_000_000,
    show_default=True,
    help="Pending touches of the scheduler scenario.",
)
@click.option(
    "--profile",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Record the worker with py-spy during each size's first full-speed run, into DIR.",
)
@click.option(
    "--results-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where result files go [default: bench/results].",
)
@click.option("--no-save", is_flag=True, help="Do not write a result file.")
@click.option(
    "--report",
    is_flag=True,
    help="Only write docs/BENCHMARKS.md and docs/benchmarks.png from the saved results.",
)
def bench(
    leads: str,
    repeat: int,
    scenario: str,
    as_json: bool,
    no_baseline: bool,
    no_half_load: bool,
    baseline_processes: str,
    pending: int,
    profile: Path | None,
    results_dir: Path | None,
    no_save: bool,
    report: bool,
) -> None:
    """Benchmark leadflow against bare aiokafka and confluent-kafka loops."""
    from bench.runner import RESULTS_DIR, BenchOptions, run_bench

    folder = results_dir or RESULTS_DIR
    if report:
        from bench.report import write_report

        for path in write_report(folder):
            click.echo(f"wrote {path}")
        return
    if repeat < 1:
        raise ConfigError(f"--repeat {repeat}: must be at least 1")
    opts = BenchOptions(
        sizes=_sizes(leads),
        repeat=repeat,
        scenario=scenario,
        baselines=not no_baseline,
        half_load=not no_half_load,
        baseline_processes=int(baseline_processes),
        pending=pending,
        profile_dir=profile,
        results_dir=None if no_save else folder,
        command=shlex.join(["leadflow", "bench", *sys.argv[2:]])
        if sys.argv[1:2] == ["bench"]
        else "leadflow bench",
    )

    def progress(line: str) -> None:
        click.echo(line, err=True)

    bench_log = logging.getLogger("leadflow.bench")
    if not any(isinstance(h, _EchoHandler) for h in bench_log.handlers):
        bench_log.addHandler(_EchoHandler())
        bench_log.setLevel(logging.INFO)

    previous = signal.signal(signal.SIGTERM, _interrupt)  # stop cleanly: children, topics, db
    try:
        result = asyncio.run(run_bench(opts, progress))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        click.echo(json.dumps(result))
        return
    for key in (
        "leads",
        "throughput_leads_per_s",
        "baseline_aiokafka_leads_per_s",
        "baseline_confluent_leads_per_s",
        "ratio_aiokafka",
        "ratio_confluent",
        "raw_to_first_sent_s",
        "p99_stage_latency_ms",
        "p99_end_to_end_ms",
        "peak_rss_worker_mb",
        "achieved_per_window",
        "max_in_any_window",
        "other_throughput_ratio",
        "p99_due_to_emit_ms",
        "idle_cpu_worker_pct_of_core",
        "results_file",
    ):
        if key in result:
            click.echo(f"{key:<32} {result[key]}")
