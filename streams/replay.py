"""Replay a topic range into a stage's input, or rewind a stopped stage's consumer group.

Two ways to make a stage process records again (docs/REPLAY.md says when to
use which):

- **copy**: read a range of a topic (by time or by offsets, per partition)
  and produce each record again, keeping its key, value and headers, to the
  same partition of a target topic (by default the same topic, which its
  stage reads again). The workers may keep running.
- **reset**: move the worker group's committed offsets on a topic back (or
  forward) to the range start, so the stage re-reads from there when it
  starts. The group must have no live members; the current offsets are
  written to a rollback file first, and :func:`restore` applies such a file.

Both default to a dry run that reports, per partition, how many records the
range holds and, for records that lead to a send (``scored``, ``touch-due``,
``sent``), how many sends the send ledger already holds and so would be
skipped. Replaying never sends twice: the send
stage claims ``(campaign, lead, touch)`` in the ledger before any provider
call, and every stage skips leads that have moved past the record.

Errors::

    LeadflowError
    └── ReplayError                  a replay or reset could not be planned or done
        ├── GroupActiveError         the group has live members: stop the workers first
        └── RollbackFileError        a rollback file is missing, taken or malformed
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streams.admin_futures import admin_result
from streams.codec import decode_payload_any
from streams.errors import (
    CodecError,
    DatabaseError,
    DatabaseUnavailableError,
    InfraError,
    KafkaUnavailableError,
    LeadflowError,
)
from streams.lag import committed_offsets, group_member_count, worker_group
from streams.settings import Settings
from streams.state_machine import State
from streams.topics import by_name

__all__ = [
    "CONSUMER_GROUP_COMMAND",
    "REPLAYED_FROM_HEADER",
    "ROLLBACK_KIND",
    "SEND_TOPICS",
    "GroupActiveError",
    "OffsetSpec",
    "PartitionPlan",
    "ReplayError",
    "ReplayReport",
    "RollbackFileError",
    "Selection",
    "SendCounts",
    "copy_range",
    "kafka_tool_command",
    "kafka_tool_script",
    "read_rollback",
    "reset_group",
    "restore",
]

#: Topics whose records lead to a send (the dry run looks them up in the ledger).
SEND_TOPICS = frozenset({"scored", "touch-due", "sent"})
#: ``kind`` of a rollback file.
ROLLBACK_KIND = "leadflow-replay-rollback"
#: Kafka's own ``kafka-consumer-groups.sh`` class (Kafka 4.x, in the kafka-tools jar).
CONSUMER_GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
#: Header naming where a copied record came from (``topic:partition:offset``).
REPLAYED_FROM_HEADER = "x-leadflow-replayed-from"

_TIMEOUT_S = 10.0
_READ_BATCH = 500
_LOOKUP_BATCH = 2000
#: Offsets of a partition: one number for every selected partition, or per partition.
OffsetSpec = int | Mapping[int, int]


class ReplayError(LeadflowError):
    """A replay or offset reset could not be planned or carried out."""

    reason = "replay"


class GroupActiveError(ReplayError):
    """The consumer group still has live members, so its offsets must not move."""

    reason = "group_active"

    def __init__(self, group: str, members: int) -> None:
        self.group = group
        self.members = members
        super().__init__(
            f"consumer group {group} has {members} live member(s); stop every worker of "
            "this deployment (and wait for them to leave the group) before resetting offsets"
        )


class RollbackFileError(ReplayError):
    """A rollback file could not be written or read."""

    reason = "rollback_file"


# --- what to replay ----------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """A range of a catalog topic: ``[from, to)`` on each selected partition.

    Each side is an offset (``from_offsets``/``to_offsets``: one number for
    every partition, or a ``{partition: offset}`` map) or a time (the first
    record whose broker timestamp is at or after it); unset sides are the
    log start and the current end. ``partitions`` limits the partitions;
    without it, the partitions named in offset maps, or else all.
    """

    topic: str
    partitions: tuple[int, ...] | None = None
    from_offsets: OffsetSpec | None = None
    to_offsets: OffsetSpec | None = None
    from_time: datetime | None = None
    to_time: datetime | None = None

    def __post_init__(self) -> None:
        try:
            by_name(self.topic)
        except KeyError:
            raise ReplayError(
                f"unknown topic {self.topic!r}: give a catalog name (leadflow topics --list "
                "shows them, without the prefix)"
            ) from None
        if self.from_offsets is not None and self.from_time is not None:
            raise ReplayError("give the range start as an offset or a time, not both")
        if self.to_offsets is not None and self.to_time is not None:
            raise ReplayError("give the range end as an offset or a time, not both")
        for spec in (self.from_offsets, self.to_offsets):
            values = [spec] if isinstance(spec, int) else list((spec or {}).values())
            if any(v < 0 for v in values):
                raise ReplayError("offsets must be 0 or more")

    def wanted_partitions(self, existing: Iterable[int]) -> list[int]:
        """The partitions this selection covers among ``existing``."""
        have = sorted(existing)
        named: set[int] = set()
        for spec in (self.from_offsets, self.to_offsets):
            if isinstance(spec, Mapping):
                named |= set(spec)
        wanted = set(self.partitions) if self.partitions is not None else (named or set(have))
        unknown = sorted((wanted | named) - set(have))
        if unknown:
            raise ReplayError(
                f"{self.topic} has partitions 0..{len(have) - 1}, not {unknown}"
                if have
                else f"{self.topic} has no partitions"
            )
        if self.partitions is not None and named - wanted:
            raise ReplayError(
                f"offsets name partitions {sorted(named - wanted)} outside --partition"
            )
        return sorted(wanted)


@dataclass
class SendCounts:
    """What the records of a range would do to sends, from the ledger and lead states."""

    #: A ledger claim exists for (campaign, lead, touch): skipped as already done.
    done: int = 0
    #: No claim, but the lead has moved past this touch or ended: the stage skips it.
    moved_on: int = 0
    #: No claim and the lead is at this touch: the replay may send it.
    may_send: int = 0
    #: Leads to no send (not qualified, the last touch's outcome, no campaign, undecodable).
    no_send: int = 0

    def add(self, other: SendCounts) -> None:
        """Add ``other`` to these counts."""
        self.done += other.done
        self.moved_on += other.moved_on
        self.may_send += other.may_send
        self.no_send += other.no_send


@dataclass
class PartitionPlan:
    """One partition of a replay: the range, and what reading it found."""

    partition: int
    #: Range ``[start, end)`` of offsets to copy or (reset) to re-read.
    start: int
    end: int
    #: Log start and end of the partition when planned.
    low: int
    high: int
    #: Reset mode: the group's committed offset before (None: nothing committed).
    committed: int | None = None
    #: Reset mode: the offset the group is moved to.
    new_offset: int | None = None
    #: Records read in the range (compaction and transaction markers leave gaps).
    records: int = 0
    #: Records produced to the target (copy mode, executed).
    copied: int = 0
    sends: SendCounts | None = None


@dataclass
class ReplayReport:
    """What a replay, reset or restore did (or, in a dry run, would do)."""

    mode: Literal["copy", "reset", "restore"]
    topic: str
    executed: bool
    partitions: list[PartitionPlan]
    #: Copy: the target topic. Reset/restore: the consumer group.
    target: str
    rollback_file: Path | None = None
    #: Restore: (topic, partition, before, after) per partition.
    moves: list[tuple[str, int, int | None, int]] = field(default_factory=list)
    #: Reset/restore dry runs: live members of the group (an execute refuses them).
    live_members: int = 0

    @property
    def records(self) -> int:
        """Records in the range, over all partitions."""
        return sum(p.records for p in self.partitions)

    def send_totals(self) -> SendCounts | None:
        """Send counts over all partitions (None when the topic carries no sends)."""
        counted = [p.sends for p in self.partitions if p.sends is not None]
        if not counted:
            return None
        total = SendCounts()
        for counts in counted:
            total.add(counts)
        return total

    def lines(self) -> list[str]:
        """The report as text."""
        if self.mode == "restore":
            return self._restore_lines()
        run = "executed" if self.executed else "dry run"
        if self.mode == "copy":
            head = f"replay {self.topic} -> {self.target}: copy records ({run})"
            cols = ["partition", "from", "to", "records"]
        else:
            head = f"replay {self.topic}: reset group {self.target} ({run})"
            cols = ["partition", "committed", "new", "end", "re-read"]
        sends = self.send_totals()
        if sends is not None:
            cols += ["done", "moved-on", "may-send", "no-send"]
        rows = [cols]
        for p in self.partitions:
            if self.mode == "copy":
                row = [str(p.partition), str(p.start), str(p.end), str(p.records)]
            else:
                committed = "-" if p.committed is None else str(p.committed)
                row = [str(p.partition), committed, str(p.new_offset), str(p.high), str(p.records)]
            if sends is not None:
                s = p.sends or SendCounts()
                row += [str(s.done), str(s.moved_on), str(s.may_send), str(s.no_send)]
            rows.append(row)
        total = ["total", "", "", str(self.records)]
        if self.mode == "reset":
            total.insert(1, "")
        if sends is not None:
            total += [str(sends.done), str(sends.moved_on), str(sends.may_send), str(sends.no_send)]
        rows.append(total)
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        out = [head]
        out += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        if sends is not None:
            out.append("  done: in the send ledger, skipped     moved-on: lead past it, skipped")
            out.append("  may-send: not sent, lead at it         no-send: leads to no send")
        out += self._closing(sends)
        return out

    def _closing(self, sends: SendCounts | None) -> list[str]:
        out: list[str] = []
        if self.mode == "copy":
            if self.executed:
                copied = sum(p.copied for p in self.partitions)
                out.append(f"copied {copied} record(s) to {self.target}")
            else:
                out.append(
                    f"dry run: nothing was changed; add --execute to copy {self.records} "
                    f"record(s) to {self.target}"
                )
        else:
            skipped = sum(
                max(0, (p.new_offset or 0) - (p.low if p.committed is None else p.committed))
                for p in self.partitions
            )
            if skipped:
                out.append(f"warning: moving forward skips {skipped} record(s) never processed")
            out += self._live_warning()
            if self.executed:
                out.append(f"rollback file: {self.rollback_file}")
                out.append(
                    f"group {self.target} set to the new offsets on {len(self.partitions)} "
                    f"partition(s); undo with: leadflow replay --restore {self.rollback_file} "
                    "--execute"
                )
            else:
                out.append(
                    "dry run: nothing was changed; stop the workers, then add --execute "
                    "(the current offsets are written to a rollback file first)"
                )
        if sends is not None and sends.may_send:
            out.append(
                f"note: {sends.may_send} record(s) are for sends not made yet; the stage "
                "sends them once, as it would have without the replay"
            )
        return out

    def _live_warning(self) -> list[str]:
        if not self.live_members:
            return []
        return [
            f"warning: group {self.target} has {self.live_members} live member(s); "
            "--execute refuses until every worker has stopped"
        ]

    def _restore_lines(self) -> list[str]:
        run = "executed" if self.executed else "dry run"
        rows = [["topic", "partition", "current", "restored"]]
        for topic, partition, before, after in self.moves:
            rows.append([topic, str(partition), "-" if before is None else str(before), str(after)])
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        out = [f"restore group {self.target} from {self.topic} ({run})"]
        out += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        out += self._live_warning()
        if self.executed:
            out.append(f"rollback file (offsets before this restore): {self.rollback_file}")
        else:
            out.append("dry run: nothing was changed; stop the workers, then add --execute")
        return out


# --- sends: what would a replayed record do --------------------------------------------

_SendKey = tuple[str, str, int]
#: How a record leads to a send: ``due`` (send stage), ``scored`` (touch 1 queued),
#: ``sent`` (the next touch queued).
_Kind = Literal["due", "scored", "sent"]


def _send_of(payload: bytes | None) -> tuple[_SendKey, _Kind] | None:
    """The (campaign, lead, touch) a record would lead to sending, with how."""
    if payload is None:
        return None
    try:
        full_name, rec = decode_payload_any(payload)
    except CodecError:
        return None
    campaign, lead = rec.get("campaign_id"), rec.get("lead_id")
    if not isinstance(campaign, str) or not isinstance(lead, str):
        return None
    if full_name == "leadflow.ScoredLead":
        return ((campaign, lead, 1), "scored") if rec.get("qualified") else None
    touch = rec.get("touch")
    if not isinstance(touch, int) or touch < 1:
        return None  # touch 0 is the opt-out confirmation: never from a replay
    if full_name == "leadflow.TouchSent":
        if rec.get("status") == "ambiguous":
            return None  # reconcile, not the sequence, handles ambiguous outcomes
        return (campaign, lead, touch + 1), "sent"
    return (campaign, lead, touch), "due"


def _stage_acts(kind: _Kind, touch: int, state: str | None, lead_touch: int) -> bool:
    """Whether the stage reading the record would still act on it (see agents/)."""
    if kind == "scored":  # ScheduleStage: not past in_sequence(1)
        return state in (None, State.NEW, State.ENRICHED, State.QUALIFIED) or (
            state == State.IN_SEQUENCE and lead_touch == 1
        )
    if kind == "sent":  # SequenceStage: at touch k (or already at k + 1)
        k = touch - 1
        return (state in (State.IN_SEQUENCE, State.RECONCILE) and lead_touch == k) or (
            state == State.IN_SEQUENCE and lead_touch == touch
        )
    return state == State.IN_SEQUENCE and lead_touch == touch  # SendStage


class SendLookup:
    """Classifies records' sends against Postgres, a batch of lookups at a time."""

    def __init__(self, dsn: str) -> None:
        try:
            self.conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise DatabaseUnavailableError(
                f"cannot reach Postgres to look up the send ledger: {exc}"
            ) from exc
        self._sequence_lengths: dict[str, int | None] = {}
        self._pending: list[tuple[int, _SendKey, _Kind]] = []
        self.counts: dict[int, SendCounts] = {}

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def add(self, partition: int, payload: bytes | None) -> None:
        """Count one record of ``partition``."""
        counts = self.counts.setdefault(partition, SendCounts())
        found = _send_of(payload)
        if found is None:
            counts.no_send += 1
            return
        self._pending.append((partition, *found))
        if len(self._pending) >= _LOOKUP_BATCH:
            self.flush()

    def start(self, partition: int) -> None:
        """Report ``partition`` even when it has no records."""
        self.counts.setdefault(partition, SendCounts())

    def flush(self) -> None:
        """Look up the records added since the last flush."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        keys = [key for _, key, _ in pending]
        lengths = self._lengths({c for c, _, _ in keys})
        rows = self._rows(
            """
            SELECT k.i, s.status IS NOT NULL, l.state, coalesce(l.touch, 0)
            FROM unnest(%b::text[], %b::text[], %b::int[])
                 WITH ORDINALITY AS k(campaign_id, lead_id, touch, i)
            LEFT JOIN send_ledger s ON s.campaign_id = k.campaign_id
                 AND s.lead_id = k.lead_id AND s.touch = k.touch
            LEFT JOIN leads l ON l.campaign_id = k.campaign_id AND l.lead_id = k.lead_id
            """,
            ([c for c, _, _ in keys], [lead for _, lead, _ in keys], [t for _, _, t in keys]),
        )
        found = {int(i): (bool(claimed), state, int(t)) for i, claimed, state, t in rows}
        for i, (partition, (campaign, _lead, touch), kind) in enumerate(pending, start=1):
            counts = self.counts[partition]
            length = lengths.get(campaign)
            if length is None or touch > length:
                counts.no_send += 1  # unknown campaign, or the outcome of the last touch
                continue
            claimed, state, lead_touch = found[i]
            if claimed:
                counts.done += 1
            elif _stage_acts(kind, touch, None if state is None else str(state), lead_touch):
                counts.may_send += 1
            else:
                counts.moved_on += 1

    def _rows(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(query, params).fetchall()
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailableError(f"send ledger lookup failed: {exc}") from exc
        except psycopg.Error as exc:
            raise DatabaseError(f"send ledger lookup failed: {exc}") from exc

    def _lengths(self, campaigns: set[str]) -> dict[str, int | None]:
        missing = sorted(campaigns - set(self._sequence_lengths))
        if missing:
            rows = self._rows(
                "SELECT campaign_id, jsonb_array_length(config->'sequence') FROM campaigns "
                "WHERE campaign_id = ANY(%s)",
                (missing,),
            )
            known = {str(c): int(n) for c, n in rows}
            for c in missing:
                self._sequence_lengths[c] = known.get(c)
        return {c: self._sequence_lengths[c] for c in campaigns}


# --- Kafka plumbing --------------------------------------------------------------------


def _admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.bootstrap_servers})


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"leadflow-replay-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 3,
        }
    )


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    try:
        meta = consumer.list_topics(topic, timeout=_TIMEOUT_S)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot read metadata of {topic}: {exc}") from exc
    info = meta.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise ReplayError(f"topic {topic} does not exist (leadflow topics creates it)")
    return sorted(info.partitions)


def _ms(at: datetime) -> int:
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


def _offset_for(spec: OffsetSpec | None, partition: int) -> int | None:
    if spec is None:
        return None
    if isinstance(spec, int):
        return spec
    return spec.get(partition)


def _times(
    consumer: Consumer, topic: str, partitions: list[int], at: datetime | None
) -> dict[int, int]:
    """Per partition, the first offset at or after ``at`` (-1: none that new)."""
    if at is None:
        return {}
    try:
        found = consumer.offsets_for_times(
            [TopicPartition(topic, p, _ms(at)) for p in partitions], timeout=_TIMEOUT_S
        )
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot look up offsets by time on {topic}: {exc}") from exc
    return {tp.partition: tp.offset for tp in found}


def _plan(consumer: Consumer, settings: Settings, selection: Selection) -> list[PartitionPlan]:
    topic = settings.topic_name(selection.topic)
    partitions = selection.wanted_partitions(_partitions(consumer, topic))
    starts = _times(consumer, topic, partitions, selection.from_time)
    ends = _times(consumer, topic, partitions, selection.to_time)
    plans = []
    for p in partitions:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=_TIMEOUT_S)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"cannot read offsets of {topic}[{p}]: {exc}") from exc
        start = _offset_for(selection.from_offsets, p)
        if start is None:
            start = starts.get(p, low)
            start = high if start < 0 else start
        end = _offset_for(selection.to_offsets, p)
        if end is None:
            end = ends.get(p, high)
            end = high if end < 0 else end
        start = min(max(start, low), high)
        end = min(max(end, start), high)
        plans.append(PartitionPlan(p, start, end, low, high))
    return plans


def _read(
    consumer: Consumer, topic: str, ranges: Mapping[int, tuple[int, int]], timeout_s: float
) -> Iterator[Message]:
    """Every record of ``topic`` in ``[start, end)`` per partition, in offset order."""
    remaining = {p for p, (start, end) in ranges.items() if start < end}
    if not remaining:
        return
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in sorted(remaining)])
    try:
        deadline = time.monotonic() + timeout_s
        while remaining:
            messages = consumer.consume(_READ_BATCH, timeout=0.5)
            if messages:
                deadline = time.monotonic() + timeout_s
            elif time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"reading {topic} stalled for {timeout_s:.0f} s "
                    f"({len(remaining)} partition(s) unfinished)"
                )
            for msg in messages:
                partition, offset = msg.partition() or 0, msg.offset() or 0
                error = msg.error()
                if error is not None:
                    # The end of the log: a range ending in a gap (compaction,
                    # transaction markers) is done even though no record at end - 1 came.
                    if error.code() == KafkaError._PARTITION_EOF and partition in remaining:
                        remaining.discard(partition)
                        consumer.incremental_unassign([TopicPartition(topic, partition)])
                    continue
                if partition not in remaining:
                    continue
                end = ranges[partition][1]
                if offset < end:
                    yield msg
                if offset + 1 >= end:
                    remaining.discard(partition)
                    consumer.incremental_unassign([TopicPartition(topic, partition)])
    finally:
        consumer.unassign()


def _alter(admin: AdminClient, group: str, offsets: Sequence[tuple[str, int, int]]) -> None:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p, o) for t, p, o in offsets])
    try:
        future = admin.alter_consumer_group_offsets([request])[group]
        result = admin_result(admin, future, _TIMEOUT_S, f"new offsets of group {group}")
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() in (
            KafkaError.UNKNOWN_MEMBER_ID,
            KafkaError.REBALANCE_IN_PROGRESS,
        ):
            raise GroupActiveError(group, _members(admin, group)) from exc
        raise ReplayError(f"cannot move offsets of group {group}: {exc}") from exc
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        raise ReplayError(f"group {group}: {len(failed)} partition(s) not moved: {failed[0].error}")


def _members(admin: AdminClient, group: str) -> int:
    """Members of ``group`` (1 when the broker does not say)."""
    try:
        future = admin.describe_consumer_groups([group])[group]
        description = admin_result(admin, future, _TIMEOUT_S, f"group {group}")
    except (KafkaException, KafkaUnavailableError):
        return 1
    return max(1, len(description.members or []))


def _refuse_live(settings: Settings, group: str, execute: bool = True) -> int:
    """Live members of ``group``; raises :class:`GroupActiveError` when executing."""
    members = group_member_count(settings.bootstrap_servers, group)
    if members and execute:
        raise GroupActiveError(group, members)
    return members


# --- rollback files ---------------------------------------------------------------------


def _default_rollback(settings: Settings, group: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return settings.home_dir / "replay" / f"rollback-{group}-{stamp}.json"


def _write_rollback(
    path: Path,
    settings: Settings,
    group: str,
    offsets: Mapping[tuple[str, int], int | None],
    why: str,
) -> Path:
    """Write the offsets a change is about to replace (never over an existing file)."""
    doc = {
        "kind": ROLLBACK_KIND,
        "version": 1,
        "group": group,
        "bootstrap": settings.bootstrap_servers,
        "written_at": datetime.now(UTC).isoformat(),
        "reason": why,
        "offsets": [
            {"topic": t, "partition": p, "offset": o} for (t, p), o in sorted(offsets.items())
        ],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
    except FileExistsError:
        raise RollbackFileError(f"{path} exists; a rollback file is never overwritten") from None
    except OSError as exc:
        raise RollbackFileError(f"cannot write rollback file {path}: {exc}") from exc
    return path.resolve()


def read_rollback(path: Path) -> tuple[str, dict[tuple[str, int], int | None]]:
    """The group and offsets of a rollback file (``None``: nothing was committed)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RollbackFileError(f"cannot read rollback file {path}: {exc}") from exc
    except ValueError as exc:
        raise RollbackFileError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != ROLLBACK_KIND or doc.get("version") != 1:
        raise RollbackFileError(f"{path} is not a leadflow replay rollback file (version 1)")
    group, entries = doc.get("group"), doc.get("offsets")
    if not isinstance(group, str) or not group or not isinstance(entries, list) or not entries:
        raise RollbackFileError(f"{path} names no group or no offsets")
    offsets: dict[tuple[str, int], int | None] = {}
    for entry in entries:
        topic = entry.get("topic") if isinstance(entry, dict) else None
        partition = entry.get("partition") if isinstance(entry, dict) else None
        offset = entry.get("offset") if isinstance(entry, dict) else -1
        if (
            not isinstance(topic, str)
            or not isinstance(partition, int)
            or not (offset is None or (isinstance(offset, int) and offset >= 0))
        ):
            raise RollbackFileError(f"{path}: bad offset entry {entry!r}")
        offsets[(topic, partition)] = offset
    return group, offsets


# --- the operations ------------------------------------------------------------------------


def _scan(
    settings: Settings,
    consumer: Consumer,
    selection: Selection,
    plans: list[PartitionPlan],
    ranges: Mapping[int, tuple[int, int]],
    on_record: Callable[[Message], None] | None,
    timeout_s: float,
) -> None:
    """Read ``ranges``, counting records and (send topics) their sends into ``plans``."""
    by_partition = {p.partition: p for p in plans}
    lookup = SendLookup(settings.dsn) if selection.topic in SEND_TOPICS else None
    try:
        for p in plans:
            if lookup is not None:
                lookup.start(p.partition)
        for msg in _read(consumer, settings.topic_name(selection.topic), ranges, timeout_s):
            partition = msg.partition() or 0
            by_partition[partition].records += 1
            if lookup is not None:
                value = msg.value()
                lookup.add(partition, None if value is None else bytes(value))
            if on_record is not None:
                on_record(msg)
        if lookup is not None:
            lookup.flush()
            for p in plans:
                p.sends = lookup.counts.get(p.partition, SendCounts())
    finally:
        if lookup is not None:
            lookup.close()


class _Copier:
    """Produces copies of records to a target topic and counts their deliveries."""

    def __init__(self, settings: Settings, target: str, partitions: int) -> None:
        self.target = target
        self.partitions = partitions
        self.producer = Producer(
            {
                "bootstrap.servers": settings.bootstrap_servers,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                # Only used when the target has fewer partitions: the Java client's mapping.
                "partitioner": "murmur2_random",
            }
        )
        self.delivered: Counter[int] = Counter()
        self.errors: list[str] = []

    def _done(self, source_partition: int) -> Callable[[KafkaError | None, Message], None]:
        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.delivered[source_partition] += 1

        return report

    def __call__(self, msg: Message) -> None:
        source = msg.partition() or 0
        origin = f"{msg.topic()}:{source}:{msg.offset()}".encode()
        raw = msg.headers() or []
        pairs = list(raw.items()) if isinstance(raw, dict) else list(raw)
        headers: list[tuple[str, str | bytes | None]] = [
            (k, v) for k, v in pairs if k != REPLAYED_FROM_HEADER
        ]
        headers.append((REPLAYED_FROM_HEADER, origin))
        kwargs: dict[str, Any] = {}
        if source < self.partitions:
            kwargs["partition"] = source  # co-partitioned topics: keep the lead's partition
        while True:
            try:
                self.producer.produce(
                    self.target,
                    value=msg.value(),
                    key=msg.key(),
                    headers=headers,
                    on_delivery=self._done(source),
                    **kwargs,
                )
                break
            except BufferError:
                self.producer.poll(0.5)
        self.producer.poll(0)

    def finish(self, timeout_s: float) -> None:
        left = self.producer.flush(timeout_s)
        if left or self.errors:
            detail = self.errors[0] if self.errors else f"{left} still queued"
            raise ReplayError(
                f"copy to {self.target} incomplete: {len(self.errors) + left} record(s) not "
                f"delivered ({detail}); records already delivered stay copied"
            )


def copy_range(
    settings: Settings,
    selection: Selection,
    *,
    target: str | None = None,
    execute: bool = False,
    timeout_s: float = 30.0,
) -> ReplayReport:
    """Copy the records of ``selection`` to ``target`` (a catalog name; default the same topic).

    A dry run only reads the range and counts. Copies keep key, value and
    headers (plus ``x-leadflow-replayed-from``), go to the same partition
    number, and get the time of the copy as their timestamp.
    """
    target_name = settings.topic_name(target or selection.topic)
    if target is not None:
        Selection(target)  # a catalog topic
    consumer = _consumer(settings)
    copier: _Copier | None = None
    try:
        plans = _plan(consumer, settings, selection)
        if execute:
            copier = _Copier(settings, target_name, len(_partitions(consumer, target_name)))
        ranges = {p.partition: (p.start, p.end) for p in plans}
        _scan(settings, consumer, selection, plans, ranges, copier, timeout_s)
        if copier is not None:
            copier.finish(timeout_s)
            for p in plans:
                p.copied = copier.delivered[p.partition]
    finally:
        consumer.close()
        if copier is not None:
            copier.producer.flush(timeout_s)  # after a failure: what was sent is delivered
    return ReplayReport("copy", selection.topic, execute, plans, target_name)


def reset_group(
    settings: Settings,
    selection: Selection,
    *,
    group: str | None = None,
    execute: bool = False,
    rollback_file: Path | None = None,
    timeout_s: float = 30.0,
) -> ReplayReport:
    """Move ``group`` (default: the worker group) on the selection's partitions to its start.

    The end of the selection is not used: the stage reads on to the end of
    the topic. Executed, it refuses (:class:`GroupActiveError`) while the
    group has live members, and writes the current offsets to a rollback
    file before moving any; a dry run reports the live members instead.
    """
    if selection.to_offsets is not None or selection.to_time is not None:
        raise ReplayError("a group reset moves to the range start only; drop --to-*")
    group = group or worker_group(settings)
    topic = settings.topic_name(selection.topic)
    members = _refuse_live(settings, group, execute)
    admin = _admin(settings)
    consumer = _consumer(settings)
    try:
        plans = _plan(consumer, settings, selection)
        committed = committed_offsets(
            settings.bootstrap_servers, group, [(topic, p.partition) for p in plans], _TIMEOUT_S
        )
        ranges = {}
        for p in plans:
            p.committed = committed.get((topic, p.partition))
            p.new_offset = p.start
            # What the group reads a second time: from the new offset up to where it was.
            was = p.low if p.committed is None else max(p.committed, p.low)
            ranges[p.partition] = (p.start, min(max(was, p.start), p.high))
        _scan(settings, consumer, selection, plans, ranges, None, timeout_s)
        path: Path | None = None
        if execute:
            _refuse_live(settings, group)  # workers may have started while we read
            why = f"before resetting {topic} to the range start"
            path = _write_rollback(
                rollback_file or _default_rollback(settings, group),
                settings,
                group,
                {(topic, p.partition): p.committed for p in plans},
                why,
            )
            _alter(admin, group, [(topic, p.partition, p.start) for p in plans])
    finally:
        consumer.close()
    return ReplayReport(
        "reset", selection.topic, execute, plans, group, rollback_file=path, live_members=members
    )


def restore(
    settings: Settings,
    path: Path,
    *,
    execute: bool = False,
    rollback_file: Path | None = None,
) -> ReplayReport:
    """Apply rollback file ``path``: put its group's offsets back.

    Partitions recorded with no committed offset are set to the log start
    (what a consumer with ``auto.offset.reset=earliest``, like the worker,
    would read from). Executed, the offsets it replaces go to a new
    rollback file first.
    """
    group, offsets = read_rollback(path)
    members = _refuse_live(settings, group, execute)
    admin = _admin(settings)
    consumer = _consumer(settings)
    moves: list[tuple[str, int, int | None, int]] = []
    try:
        current = committed_offsets(settings.bootstrap_servers, group, list(offsets), _TIMEOUT_S)
        for (topic, partition), offset in sorted(offsets.items()):
            if offset is None:
                try:
                    offset, _ = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=_TIMEOUT_S
                    )
                except KafkaException as exc:
                    raise KafkaUnavailableError(
                        f"cannot read offsets of {topic}[{partition}]: {exc}"
                    ) from exc
            moves.append((topic, partition, current.get((topic, partition)), offset))
    finally:
        consumer.close()
    written: Path | None = None
    if execute:
        _refuse_live(settings, group)
        written = _write_rollback(
            rollback_file or _default_rollback(settings, group),
            settings,
            group,
            {(t, p): before for t, p, before, _ in moves},
            f"before restoring {path.name}",
        )
        _alter(admin, group, [(t, p, after) for t, p, _, after in moves])
    return ReplayReport(
        "restore",
        str(path),
        execute,
        [],
        group,
        rollback_file=written,
        moves=moves,
        live_members=members,
    )


# --- Kafka's own tool ------------------------------------------------------------------------


def _kafka_tools(settings: Settings) -> tuple[Path, Path]:
    """The broker jars and the kafka-tools jar folder, fetching what is missing."""
    from streams.infra.kafka import LocalKafka  # imported late: only the tool needs it
    from streams.infra.process import require_tool

    kafka = LocalKafka(settings)
    kafka.fetch_jars()
    tools = kafka.libs_dir.parent / "tools"
    jar = tools / f"kafka-tools-{kafka.version}.jar"
    if not jar.exists():
        mvn = require_tool("mvn", "install Apache Maven to fetch Kafka's kafka-tools jar")
        proc = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "dependency:copy",
                f"-Dartifact=org.apache.kafka:kafka-tools:{kafka.version}:jar",
                f"-DoutputDirectory={tools}",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=kafka.libs_dir.parent,
        )
        if proc.returncode != 0 or not jar.exists():
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise InfraError(f"Maven could not fetch kafka-tools {kafka.version}: {tail}")
    return kafka.libs_dir, tools


def kafka_tool_command(settings: Settings, main_class: str = CONSUMER_GROUP_COMMAND) -> list[str]:
    """The command that runs one of Kafka's own tools (by default kafka-consumer-groups).

    Uses the broker jars ``leadflow infra up`` caches, plus the kafka-tools
    jar (not part of the broker's classpath), fetched once with Maven into
    ``<cache>/kafka-<version>/tools``. Append the tool's arguments.
    """
    from streams.infra.process import require_tool

    libs, tools = _kafka_tools(settings)
    java = require_tool(
        "java", "install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)"
    )
    return [java, "-cp", f"{libs}/*:{tools}/*", main_class]


def kafka_tool_script(settings: Settings) -> Path:
    """Write ``kafka-consumer-groups.sh`` running Kafka's tool from the cached jars; its path.

    It lives beside the jars (``<cache>/kafka-<version>/bin``) and takes the
    tool's usual arguments, like the script in Kafka's own tarball.
    """
    cmd = kafka_tool_command(settings)
    path = _kafka_tools(settings)[0].parent / "bin" / "kafka-consumer-groups.sh"
    text = (
        "#!/bin/sh\n"
        "# Kafka's kafka-consumer-groups from leadflow's cached Kafka jars "
        "(written by `leadflow replay --kafka-tool`).\n"
        f'exec {shlex.join(cmd)} "$@"\n'
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(path)
    except OSError as exc:
        raise InfraError(f"cannot write {path}: {exc}") from exc
    return path
