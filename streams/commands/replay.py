"""``leadflow replay``: replay a topic range, or reset a stopped stage's consumer group.

See docs/REPLAY.md. Everything is a dry run unless ``--execute`` is given.
Refusals (a group with live members, a bad rollback file) are
:class:`~streams.errors.LeadflowError` subclasses, which ``leadflow`` prints
on one line, exiting with status 2.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from streams import replay as ops
from streams.campaign import parse_duration
from streams.replay import OffsetSpec, Selection
from streams.settings import get_settings

__all__ = ["parse_offsets", "parse_when", "replay"]


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when it has no zone), or a duration ago such as ``2h`` or ``1d12h``."""
    value = text.strip()
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        try:
            ago = parse_duration(value)
        except ValueError:
            raise click.BadParameter(
                f"{text!r} is neither an ISO 8601 time (2026-12-01T09:00:00Z) "
                "nor a duration ago (30m, 2h, 1d12h)"
            ) from None
        return (now or datetime.now(UTC)) - ago
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def parse_offsets(values: tuple[str, ...]) -> OffsetSpec | None:
    """``N`` (every partition) or ``P:N`` lists (``0:120,3:400``), possibly repeated."""
    if not values:
        return None
    single: int | None = None
    per: dict[int, int] = {}
    for value in values:
        for part in (p.strip() for p in value.split(",")):
            try:
                if ":" in part:
                    p, _, n = part.partition(":")
                    if int(p) in per:
                        raise click.BadParameter(f"partition {int(p)} is given twice")
                    per[int(p)] = int(n)
                else:
                    if single is not None:
                        raise click.BadParameter("give one offset for every partition, once")
                    single = int(part)
            except ValueError:
                raise click.BadParameter(
                    f"{part!r} is not an offset (N) or a partition's offset (P:N)"
                ) from None
    if single is not None and per:
        raise click.BadParameter("give either one offset (N) or P:N pairs, not both")
    return single if single is not None else per


def _when(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    return None if value is None else parse_when(value)


def _offsets(
    _ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
) -> OffsetSpec | None:
    return parse_offsets(value)


@click.command()
@click.argument("topic", required=False)
@click.option(
    "--from-time",
    "from_time",
    metavar="WHEN",
    callback=_when,
    help="Range start: ISO 8601, or a duration ago such as 2h.",
)
@click.option(
    "--to-time",
    "to_time",
    metavar="WHEN",
    callback=_when,
    help="Range end (exclusive), like --from-time.",
)
@click.option(
    "--from-offset",
    "from_offset",
    multiple=True,
    metavar="N|P:N,...",
    callback=_offsets,
    help="Range start offset, for every partition or per partition.",
)
@click.option(
    "--to-offset",
    "to_offset",
    multiple=True,
    metavar="N|P:N,...",
    callback=_offsets,
    help="Range end offset (exclusive), for every partition or per partition.",
)
@click.option(
    "--partition", "partitions", multiple=True, type=int, help="Only this partition (repeatable)."
)
@click.option("--target", metavar="TOPIC", help="Copy into this catalog topic (default: TOPIC).")
@click.option(
    "--reset-group",
    is_flag=True,
    help="Move the stopped worker group's offsets to the range start instead of copying.",
)
@click.option("--group", metavar="GROUP", help="Group to reset (default: the worker group).")
@click.option(
    "--rollback-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the current offsets before changing them (default under .leadflow/).",
)
@click.option(
    "--restore",
    "restore_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Put back the offsets recorded in this rollback file.",
)
@click.option("--execute", is_flag=True, help="Do it; without this, only report what would happen.")
@click.option(
    "--kafka-tool",
    is_flag=True,
    help="Write Kafka's own kafka-consumer-groups.sh (run from our jars) and print its path.",
)
def replay(
    topic: str | None,
    from_time: datetime | None,
    to_time: datetime | None,
    from_offset: OffsetSpec | None,
    to_offset: OffsetSpec | None,
    partitions: tuple[int, ...],
    target: str | None,
    reset_group: bool,
    group: str | None,
    rollback_file: Path | None,
    restore_file: Path | None,
    execute: bool,
    kafka_tool: bool,
) -> None:
    """Replay a range of TOPIC (a catalog name such as touch-due) into a stage's input.

    By default the records in the range are copied to the end of TOPIC (or
    --target), keeping key, value and headers, and the stage reading it
    processes them again. With --reset-group, the stopped worker group's
    offsets on TOPIC move to the range start instead, and the stage re-reads
    from there when it starts. Nothing changes without --execute. Replays
    never send twice: see docs/REPLAY.md.
    """
    settings = get_settings()
    if kafka_tool:
        if topic or restore_file:
            raise click.UsageError("--kafka-tool takes no other arguments")
        click.echo(str(ops.kafka_tool_script(settings)))
        return
    if restore_file is not None:
        ranged = (topic, from_time, to_time, from_offset, to_offset, target, group)
        if any(v is not None for v in ranged) or partitions or reset_group:
            raise click.UsageError("--restore takes only --rollback-file and --execute")
        report = ops.restore(settings, restore_file, execute=execute, rollback_file=rollback_file)
    elif topic is None:
        raise click.UsageError("give a TOPIC to replay, or --restore FILE")
    else:
        if reset_group and target:
            raise click.UsageError("--target is for copying; a group reset re-reads TOPIC itself")
        if not reset_group and (group or rollback_file):
            raise click.UsageError("--group and --rollback-file go with --reset-group")
        selection = Selection(
            topic,
            partitions=tuple(partitions) or None,
            from_offsets=from_offset,
            to_offsets=to_offset,
            from_time=from_time,
            to_time=to_time,
        )
        if reset_group:
            report = ops.reset_group(
                settings, selection, group=group, execute=execute, rollback_file=rollback_file
            )
        else:
            report = ops.copy_range(settings, selection, target=target, execute=execute)
    for line in report.lines():
        click.echo(line)
