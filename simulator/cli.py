"""``leadflow sim``: run the provider simulator until SIGINT or SIGTERM.

Configuration precedence, lowest first: built-in defaults, the ``--config``
file (or ``LEADFLOW_SIM_CONFIG``), ``LEADFLOW_SIM_*`` / ``LEADFLOW_WEBHOOK_SECRET``
environment variables, then these flags. A bad or missing setting stops the
command before anything listens, with one line naming it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from simulator.config import SimConfig, SimSettings, apply_overrides, load_config_file
from simulator.server import run_simulator
from streams.settings import Settings, load_from_env

__all__ = ["build_config", "serve", "sim"]

log = logging.getLogger("leadflow.sim")


def build_config(
    *,
    config_file: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    smtp_port: int | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    seed: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> SimConfig:
    """The validated config from file, environment and flags (ConfigError if bad)."""
    env = SimSettings.from_env(environ)
    path = config_file or (Path(env.config) if env.config else None)
    file_data = load_config_file(path) if path is not None else {}
    config = apply_overrides(SimConfig(), file_data)
    if "time_scale" not in file_data:
        # Follow the pipeline's campaign clock speed unless the file says otherwise.
        shared = load_from_env(Settings, environ)
        config = apply_overrides(config, {"time_scale": shared.time_scale})
    config = apply_overrides(config, env.as_overrides())
    flags: dict[str, Any] = {}
    if host is not None:
        flags["host"] = host
    if port is not None:
        flags["port"] = port
    if smtp_port is not None:
        flags["smtp_port"] = smtp_port
    if seed is not None:
        flags["seed"] = seed
    hooks: dict[str, Any] = {}
    if webhook_url is not None:
        hooks["url"] = webhook_url
    if webhook_secret is not None:
        hooks["secret"] = webhook_secret
    if hooks:
        flags["webhooks"] = hooks
    return apply_overrides(config, flags) if flags else config


async def serve(config: SimConfig, stop: asyncio.Event | None = None) -> None:
    """Run the simulator until ``stop`` is set, or SIGINT/SIGTERM arrives."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform
            pass
    try:
        async with run_simulator(config) as sim:
            hooks = config.webhooks.url or "off"
            log.info(
                "leadflow sim ready: http %s smtp %s:%d webhooks %s seed %s",
                sim.http_url, sim.smtp_host, sim.smtp_port, hooks,
                "random" if config.seed is None else config.seed,
            )  # fmt: skip
            await stop.wait()
            stats = sim.ledger.stats()
            log.info(
                "leadflow sim stopping: %d messages accepted, %d duplicates, %d 429s served",
                stats["messages"]["total"], stats["duplicates"]["total"],
                stats["rate_limited_total"],
            )  # fmt: skip
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


@click.command("sim")
@click.option("--host", default=None, help="Bind address.  [default: 127.0.0.1]")
@click.option("--port", type=int, default=None, help="HTTP port (0: any free).  [default: 8099]")
@click.option(
    "--smtp-port", type=int, default=None, help="SMTP port (0: any free).  [default: 8025]"
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="YAML or JSON behaviour file (see docs/SIMULATOR.md). Env: LEADFLOW_SIM_CONFIG.",
)
@click.option(
    "--webhook-url",
    default=None,
    help="Pipeline URL for webhooks, e.g. http://127.0.0.1:6066/webhooks/sim (empty: off).",
)
@click.option(
    "--webhook-secret",
    default=None,
    help="HMAC secret for webhooks. Env: LEADFLOW_WEBHOOK_SECRET (prefer it to the flag).",
)
@click.option("--seed", type=int, default=None, help="Seed for reproducible randomness.")
@click.option("--check", is_flag=True, help="Validate the configuration and exit.")
def sim(
    host: str | None,
    port: int | None,
    smtp_port: int | None,
    config_file: Path | None,
    webhook_url: str | None,
    webhook_secret: str | None,
    seed: int | None,
    check: bool,
) -> None:
    """Run the local provider simulator (SMS, voice, enrichment, LLM, SMTP, webhooks)."""
    config = build_config(
        config_file=config_file,
        host=host,
        port=port,
        smtp_port=smtp_port,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        seed=seed,
    )
    if check:
        click.echo("simulator config OK")
        return
    level = load_from_env(Settings).log_level.upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(config))
