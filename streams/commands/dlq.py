"""``leadflow dlq list|show|redrive``: inspect and redrive dead letters.

A dead letter is named by its place on the dead-letter topic,
``partition:offset`` (``3:1042``). Filters are the same for ``list`` and
``redrive``: ``--stage``, ``--reason``, ``--campaign``, ``--topic`` (the
original topic, ``raw`` or a full name), ``--lead`` (each may be repeated),
``--since`` and ``--until`` (ISO-8601 or a duration ago such as ``2h``).
See docs/DEAD-LETTERS.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from sinks.dead_letter_redrives import RedriveRecord, RedriveStore
from streams.dead_letters import DeadLetter, DeadLetterId, dead_letter_topic
from streams.dlq import (
    DEFAULT_RATE,
    DeadLetterFilter,
    describe,
    parse_time,
    redrive,
    resolve_topic,
    select_dead_letters,
    summarize,
)
from streams.errors import DatabaseError
from streams.settings import Settings, get_settings

__all__ = ["dlq"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Settings) else get_settings()


def _store(settings: Settings) -> RedriveStore:
    return RedriveStore(settings.dsn, dead_letter_topic(settings))


def _filter_options(func: _F) -> _F:
    options = [
        click.option("--stage", "stages", multiple=True, help="Stage that failed (repeatable)."),
        click.option("--reason", "reasons", multiple=True, help="Failure reason (repeatable)."),
        click.option("--campaign", "campaigns", multiple=True, help="Campaign id (repeatable)."),
        click.option(
            "--topic",
            "topics",
            multiple=True,
            help="Original topic: a catalog name (raw, scored, ...) or a full name (repeatable).",
        ),
        click.option("--lead", "leads", multiple=True, help="Lead id (repeatable)."),
        click.option(
            "--since", help="Failed at or after: ISO-8601 time, or a duration ago (30m, 2h, 1d)."
        ),
        click.option("--until", help="Failed before: ISO-8601 time, or a duration ago."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _filter(settings: Settings, params: dict[str, Any]) -> DeadLetterFilter:
    now = datetime.now(UTC)
    return DeadLetterFilter(
        stages=frozenset(params["stages"]),
        reasons=frozenset(params["reasons"]),
        campaigns=frozenset(params["campaigns"]),
        topics=frozenset(resolve_topic(settings, t) for t in params["topics"]),
        leads=frozenset(params["leads"]),
        since=parse_time(params["since"], now) if params["since"] else None,
        until=parse_time(params["until"], now) if params["until"] else None,
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="milliseconds")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _summary_line(dead_letters: Iterable[DeadLetter]) -> str:
    counts = summarize(dead_letters)
    total = sum(counts.values())
    if not total:
        return "0 dead letters"
    parts = ", ".join(f"{stage}/{reason} {n}" for (stage, reason), n in counts.most_common())
    return f"{total} dead letter{'s' if total != 1 else ''}: {parts}"


def _lookup(settings: Settings, dead_letters: list[DeadLetter]) -> dict[DeadLetterId, Any] | None:
    """Redrive records, or None (with a note on stderr) when Postgres cannot say."""
    try:
        return dict(_store(settings).lookup(dead_letters))
    except DatabaseError as exc:
        click.echo(f"note: redrive status unknown: {exc}", err=True)
        return None


def _key_text(key: bytes | None) -> str | None:
    if key is None:
        return None
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + key.hex()


def _short_topic(settings: Settings, topic: str) -> str:
    prefix = settings.topic_prefix
    return topic[len(prefix) :] if prefix and topic.startswith(prefix) else topic


@click.group("dlq")
@click.pass_context
def dlq(ctx: click.Context) -> None:
    """Dead letters: list, show and redrive them (see docs/DEAD-LETTERS.md)."""
    ctx.obj = _settings(ctx)


@dlq.command("list")
@_filter_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def list_(ctx: click.Context, /, as_json: bool, **params: Any) -> None:
    """List dead letters, oldest failure first, with counts by stage and reason."""
    settings = _settings(ctx)
    found = select_dead_letters(settings, _filter(settings, params))
    redriven = _lookup(settings, found) if found else {}
    if as_json:
        rows = []
        for d in found:
            rows.append(
                {
                    "id": str(d.id),
                    **{k: v for k, v in d.record.items() if k not in ("payload", "original_key")},
                    "original_key": _key_text(d.record.get("original_key")),
                    "payload_size": len(d.record["payload"]),
                    "redriven": None if redriven is None else d.id in redriven,
                }
            )
        doc = {
            "dead_letter_topic": dead_letter_topic(settings),
            "count": len(found),
            "by_stage_reason": [
                {"stage": s, "reason": r, "count": n}
                for (s, r), n in summarize(found).most_common()
            ],
            "dead_letters": rows,
        }
        click.echo(json.dumps(doc, default=_json_default, indent=2, ensure_ascii=False))
        return
    click.echo(_summary_line(found))
    if not found:
        return
    table = [
        ("ID", "FAILED AT (UTC)", "STAGE", "REASON", "TRY", "CAMPAIGN", "LEAD", "FROM", "REDRIVEN")
    ]
    for d in found:
        state = "?" if redriven is None else ("yes" if d.id in redriven else "no")
        table.append(
            (
                str(d.id),
                d.failed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                d.stage,
                d.reason,
                str(d.attempt),
                d.campaign_id or "-",
                d.lead_id or "-",
                f"{_short_topic(settings, d.original_topic)}"
                f"[{d.record['original_partition']}]@{d.record['original_offset']}",
                state,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@dlq.command()
@click.argument("dead_letter_id")
@click.option(
    "--show-pii", is_flag=True, help="Show phones, emails and names unmasked, and the raw bytes."
)
@click.pass_context
def show(ctx: click.Context, dead_letter_id: str, show_pii: bool) -> None:
    """Print dead letter DEAD_LETTER_ID (partition:offset) as JSON, payload decoded."""
    settings = _settings(ctx)
    ident = DeadLetterId.parse(dead_letter_id)
    [dead] = select_dead_letters(settings, DeadLetterFilter(), [ident])
    found = _lookup(settings, [dead])
    record: RedriveRecord | None = None if found is None else found.get(ident)
    doc = describe(settings, dead, redriven=record, show_pii=show_pii)
    click.echo(json.dumps(doc, default=_json_default, indent=2, ensure_ascii=False))


def _ids(values: Iterable[str]) -> list[DeadLetterId]:
    return [
        DeadLetterId.parse(part) for value in values for part in value.split(",") if part.strip()
    ]


@dlq.command("redrive")
@_filter_options
@click.option(
    "--ids",
    "id_values",
    multiple=True,
    help="Only these dead letters: partition:offset, repeatable or comma-separated.",
)
@click.option("--all", "all_", is_flag=True, help="Redrive every dead letter (no filter given).")
@click.option(
    "--rate",
    type=float,
    default=DEFAULT_RATE,
    show_default=True,
    help="At most this many records per second, spread evenly.",
)
@click.option("--dry-run", is_flag=True, help="Print what would be redriven; send nothing.")
@click.option("--again", is_flag=True, help="Also redrive dead letters redriven before.")
@click.pass_context
def redrive_(
    ctx: click.Context,
    /,
    id_values: tuple[str, ...],
    all_: bool,
    rate: float,
    dry_run: bool,
    again: bool,
    **params: Any,
) -> None:
    """Republish dead letters' original records to their original topics.

    Each goes back with its original key to its original topic and partition,
    with the attempt count and failure history in headers. Dead letters
    redriven before are skipped unless --again.
    """
    settings = _settings(ctx)
    filter_ = _filter(settings, params)
    ids = _ids(id_values)
    if filter_.empty and not ids and not all_:
        raise click.UsageError("say which dead letters: give a filter, --ids, or --all")
    if rate <= 0:
        raise click.BadParameter("must be > 0", param_hint="--rate")
    found = select_dead_letters(settings, filter_, ids)
    click.echo(_summary_line(found))

    def progress(done: int, total: int, seconds: float) -> None:
        speed = done / seconds if seconds > 0 else 0.0
        click.echo(f"redrive: {done}/{total} sent ({speed:.1f}/s)", err=True)

    result = redrive(
        settings,
        found,
        store=_store(settings),
        rate=rate,
        dry_run=dry_run,
        again=again,
        progress=progress,
    )
    for line in result.lines():
        click.echo(line)
