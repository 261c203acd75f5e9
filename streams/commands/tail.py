"""``leadflow tail TOPIC``: print a topic's records as JSON lines (see docs/OPERATIONS.md).

kcat cannot decode Avro single-object encoding; this can. Each line is one
record: topic, partition, offset, timestamp, key and the decoded value
(:func:`streams.tail.format_record`). Phone numbers, emails and names are
masked unless ``--show-pii``. By default it starts at the end and follows
new records until Ctrl-C; ``--max`` and ``--exit-at-end`` make it stop.
"""

from __future__ import annotations

import os
import sys

import click

from streams.codec import record_to_json
from streams.errors import ConfigError
from streams.settings import Settings, get_settings
from streams.tail import Start, TailRequest, parse_time, topic_names
from streams.tail import tail as tail_records

__all__ = ["tail"]


def _partitions(values: tuple[str, ...]) -> tuple[int, ...]:
    found: set[int] = set()
    for value in values:
        for part in value.split(","):
            text = part.strip()
            if not text.isdigit():
                raise ConfigError(f"--partition takes partition numbers, got {value!r}")
            found.add(int(text))
    return tuple(sorted(found))


@click.command("tail")
@click.argument("topic", type=click.Choice(topic_names()), metavar="TOPIC")
@click.option(
    "--from-beginning", is_flag=True, help="Start at the oldest record kept (default: the end)."
)
@click.option(
    "--from-time",
    metavar="TIME",
    help="Start at the first record at or after TIME: ISO-8601 (naive = UTC) or epoch ms.",
)
@click.option(
    "--max",
    "max_records",
    type=click.IntRange(min=1),
    help="Stop after N records (after the --key filter).",
)
@click.option(
    "--partition",
    "-p",
    "partitions",
    multiple=True,
    metavar="P",
    help="Only partition P (repeat, or P,Q,...). Default: all.",
)
@click.option("--key", metavar="LEAD_ID", help="Only records whose key is LEAD_ID.")
@click.option("--show-pii", is_flag=True, help="Print phone numbers, emails and names unmasked.")
@click.option(
    "--exit-at-end",
    is_flag=True,
    help="Stop at the end offsets the topic had at start (default: follow new records).",
)
@click.pass_context
def tail(
    ctx: click.Context,
    topic: str,
    from_beginning: bool,
    from_time: str | None,
    max_records: int | None,
    partitions: tuple[str, ...],
    key: str | None,
    show_pii: bool,
    exit_at_end: bool,
) -> None:
    """Print TOPIC's records as JSON lines, decoded from Avro.

    TOPIC is the name without LEADFLOW_TOPIC_PREFIX: raw, enriched, scored,
    touch-due, sent, inbound, dead-letter, or lead-state-changelog (the
    state table's changelog). Records that do not decode are printed with
    an "error" field and their raw bytes (base64). Ctrl-C stops.
    """
    if from_beginning and from_time:
        raise click.UsageError("use --from-beginning or --from-time, not both")
    settings = ctx.obj if isinstance(ctx.obj, Settings) else get_settings()
    request = TailRequest(
        topic=topic,
        start=Start.BEGINNING if from_beginning else Start.TIME if from_time else Start.END,
        from_time_ms=parse_time(from_time) if from_time else None,
        max_records=max_records,
        partitions=_partitions(partitions),
        key=key,
        show_pii=show_pii,
        exit_at_end=exit_at_end,
    )
    shown = 0
    try:
        for record in tail_records(settings, request):
            click.echo(record_to_json(record))
            shown += 1
    except KeyboardInterrupt:
        click.echo(
            f"leadflow tail: stopped after {shown} record{'' if shown == 1 else 's'}", err=True
        )
    except BrokenPipeError:
        # The reader went away (| head): stop quietly. Point stdout at devnull
        # so Python's flush at exit does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
