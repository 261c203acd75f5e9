"""The ``leadflow`` command.

leadflow's own commands (``infra``, ``topics``, ``db``, ``sim``, ...) are a
click group whose subcommands are imported only when used, so ``leadflow
infra up`` does not pay for importing Faust. Faust's own commands
(``worker``, ``agents``, ``tables``, ...) are handed to the Faust app's
``main()``, so ``leadflow worker -l info`` works like ``faust -A ... worker``.

Any :class:`~streams.errors.LeadflowError` ends the command with one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from streams.errors import LeadflowError
from streams.settings import get_settings

__all__ = ["FAUST_COMMANDS", "cli", "main"]

#: leadflow's own subcommands: name -> "module:attribute" of a click command.
COMMANDS: dict[str, str] = {
    "infra": "streams.commands.infra:infra",
    "topics": "streams.commands.topics:topics",
    "db": "streams.commands.db:db",
    "schemas": "streams.commands.schemas:schemas",
    "config": "streams.commands.config:config",
    "smoke": "streams.commands.smoke:smoke",
    "produce": "streams.commands.produce:produce",
    "demo": "streams.commands.demo:demo",
    "sim": "simulator.cli:sim",
    "campaign": "streams.commands.campaign:campaign",
    "dlq": "streams.commands.dlq:dlq",
    "tail": "streams.commands.tail:tail",
    "health": "streams.commands.health:health",
    "replay": "streams.commands.replay:replay",
    "bench": "streams.commands.bench:bench",
}

#: Subcommands that belong to Faust's CLI and run the Faust app.
FAUST_COMMANDS = frozenset(
    {"worker", "agents", "tables", "send", "model", "models", "reset", "livecheck"}
)


class _LazyGroup(click.Group):
    """A click group that imports each subcommand's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*COMMANDS, "worker"])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "worker":
            return _worker_stub
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.command(
    "worker",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    help="Run the Faust worker (all agents). Takes Faust's worker options, e.g. -l info.",
)
def _worker_stub() -> None:  # pragma: no cover - dispatched before click runs
    raise click.UsageError("worker is dispatched to Faust")


@click.group(cls=_LazyGroup)
def cli() -> None:
    """leadflow: Kafka stream processing for multi-channel outreach campaigns.

    Faust's commands (worker, agents, tables, ...) run the Faust app.
    """


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``leadflow`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in FAUST_COMMANDS:
        try:
            if args[0] == "worker":  # a wrong password or CA fails here, in one line
                from streams import stack_dump_signal
                from streams.kafka_config import wait_for_connection

                stack_dump_signal.install()  # SIGUSR2 logs stacks while it waits, too
                # A broker restarting is waited for; a wrong password is not.
                wait_for_connection(
                    get_settings().kafka_start_wait_s,
                    lambda why: click.echo(f"leadflow: waiting for Kafka: {why}", err=True),
                )
            from streams.app import app  # imported late: Faust is heavy
        except LeadflowError as exc:
            click.echo(f"leadflow: error: {exc}", err=True)
            sys.exit(2)

        sys.argv = ["leadflow", *args]
        return app.main()
    try:
        return cli.main(args=args, prog_name="leadflow", standalone_mode=False)
    except LeadflowError as exc:
        click.echo(f"leadflow: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("leadflow: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
