"""Consumer lag and group membership, read from the broker (for health, metrics and ops tools).

The worker's consumer group is the Faust app id (``<prefix>leadflow``); each
stage reads one input topic. Lag of a partition is its end offset minus the
group's committed offset (or minus the log start when nothing is committed
yet), so it counts records the stage has not finished with.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streams.admin_futures import admin_result
from streams.errors import KafkaUnavailableError
from streams.kafka_config import confluent_config
from streams.settings import Settings

__all__ = [
    "STAGE_INPUT_TOPICS",
    "PartitionLag",
    "committed_offsets",
    "group_lag",
    "group_member_count",
    "stage_lag",
    "worker_group",
]

#: Each stage and the (unprefixed) topic it consumes.
STAGE_INPUT_TOPICS: Mapping[str, str] = {
    "enrich": "raw",
    "score": "enriched",
    "schedule": "scored",
    "send": "touch-due",
    "sequence": "sent",
    "inbound": "inbound",
}


@dataclass(frozen=True)
class PartitionLag:
    """One partition's position for a consumer group."""

    topic: str
    partition: int
    #: Offset the group committed (next record to read), None when none yet.
    committed: int | None
    #: Log start (low watermark) and end (high watermark) offsets.
    start: int
    end: int

    @property
    def lag(self) -> int:
        """Records on the partition the group has not committed past."""
        position = self.start if self.committed is None else max(self.committed, self.start)
        return max(0, self.end - position)


def worker_group(settings: Settings) -> str:
    """The consumer group the worker's agents use (the Faust app id)."""
    return settings.topic_name("leadflow")


#: One consumer per (bootstrap list, group), kept for the process's life: a
#: worker reads lag every few seconds, and librdkafka clients created and
#: destroyed that often while the broker restarts crashed the worker (SIGSEGV).
#: The committed offsets are read by a consumer that carries the group's id
#: (``committed``), never by the admin API's ``list_consumer_group_offsets``:
#: an admin client has no group handle, and librdkafka's OffsetFetch reply
#: handler is reported to dereference it when the broker answers
#: NOT_COORDINATOR, as it does while it restarts (confluent-kafka-javascript
#: #374). Workers died of SIGSEGV in the fault suite's broker scenario with
#: that call and not without it (docs/RELIABILITY.md). The consumer never
#: subscribes, so it never joins the group and never commits.
_clients: dict[tuple[str, str], tuple[Consumer, threading.Lock]] = {}
_clients_lock = threading.Lock()


def _lag_consumer(bootstrap: str, group: str) -> tuple[Consumer, threading.Lock]:
    with _clients_lock:
        found = _clients.get((bootstrap, group))
        if found is None:
            consumer = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    **confluent_config(),
                    # a broker restart is reported by the calls, not 20 lines/s
                    "log_level": 0,
                    "group.id": group,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                }
            )
            found = (consumer, threading.Lock())
            _clients[(bootstrap, group)] = found
        return found


def committed_offsets(
    bootstrap: str, group: str, parts: Iterable[tuple[str, int]], timeout_s: float = 10.0
) -> dict[tuple[str, int], int | None]:
    """The offsets ``group`` committed on ``parts`` (None where it has none)."""
    asked = [TopicPartition(topic, partition) for topic, partition in parts]
    if not asked:
        return {}
    consumer, lock = _lag_consumer(bootstrap, group)
    try:
        with lock:
            return _read_committed(consumer, asked, timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot read offsets of group {group}: {exc}") from exc


def _read_committed(
    consumer: Consumer, parts: list[TopicPartition], timeout_s: float
) -> dict[tuple[str, int], int | None]:
    """The consumer's group's committed offsets on ``parts`` (None where none yet)."""
    return {
        (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
        for tp in consumer.committed(parts, timeout=timeout_s)
    }


def group_lag(
    bootstrap: str, group: str, topics: Iterable[str], timeout_s: float = 10.0
) -> list[PartitionLag]:
    """Lag of ``group`` on every partition of ``topics`` (missing topics are skipped)."""
    consumer, lock = _lag_consumer(bootstrap, group)
    with lock:
        return _group_lag(consumer, bootstrap, group, topics, timeout_s)


def _group_lag(
    consumer: Consumer,
    bootstrap: str,
    group: str,
    topics: Iterable[str],
    timeout_s: float,
) -> list[PartitionLag]:
    known = {}
    for topic in topics:  # per topic: a broker may hold thousands of others
        try:
            found = consumer.list_topics(topic=topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
        if found is not None and found.error is None and found.partitions:
            known[topic] = sorted(found.partitions)
    parts = [TopicPartition(topic, p) for topic, ps in known.items() for p in ps]
    if not parts:
        return []
    try:
        committed = _read_committed(consumer, parts, timeout_s)
        bounds = _all_watermarks(consumer, parts, timeout_s)
        out = []
        for tp in parts:
            key = (tp.topic, tp.partition)
            low, high = bounds[key]
            out.append(PartitionLag(tp.topic, tp.partition, committed.get(key), low, high))
    except KafkaException as exc:  # e.g. "not leader" just after topics were created
        raise KafkaUnavailableError(f"cannot read offsets of group {group}: {exc}") from exc
    return out


def _all_watermarks(
    consumer: Consumer, parts: list[TopicPartition], timeout_s: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """Low and high offsets of every partition of ``parts``.

    Two ListOffsets requests per broker for all of them: ``offsets_for_times``
    with Kafka's special timestamps for the earliest (-2) and latest (-1)
    offsets, which is what ``get_watermark_offsets`` asks for one partition at
    a time (48 round trips for the stages' topics, three times every 10 s in
    a worker). When the batch fails or a partition reports an error (a leader
    being elected), every partition is read alone, with its retries.
    """

    def ask(timestamp: int) -> dict[tuple[str, int], int] | None:
        asked = [TopicPartition(tp.topic, tp.partition, timestamp) for tp in parts]
        try:
            answers = consumer.offsets_for_times(asked, timeout=timeout_s)
        except KafkaException:
            return None
        if any(a.error is not None or a.offset < 0 for a in answers):
            return None
        return {(a.topic, a.partition): a.offset for a in answers}

    starts = ask(OFFSET_BEGINNING)
    ends = ask(OFFSET_END) if starts is not None else None  # no second batch after a failure
    if starts is None or ends is None or len(starts) != len(parts) or len(ends) != len(parts):
        return {(tp.topic, tp.partition): _watermarks(consumer, tp, timeout_s) for tp in parts}
    return {key: (starts[key], ends[key]) for key in starts}


def _watermarks(consumer: Consumer, tp: TopicPartition, timeout_s: float) -> tuple[int, int]:
    """Low and high offsets of ``tp``, waiting out a leader election (a new topic)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            return int(low), int(high)
        except KafkaException as exc:
            retriable = exc.args[0].code() in (
                KafkaError.NOT_LEADER_FOR_PARTITION,
                KafkaError.LEADER_NOT_AVAILABLE,
                KafkaError.UNKNOWN_TOPIC_OR_PART,
            )
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stage_lag(settings: Settings, timeout_s: float = 10.0) -> dict[str, list[PartitionLag]]:
    """Per stage, the worker group's lag on each partition of the stage's input topic."""
    by_topic = {settings.topic_name(t): stage for stage, t in STAGE_INPUT_TOPICS.items()}
    rows = group_lag(settings.bootstrap_servers, worker_group(settings), by_topic, timeout_s)
    out: dict[str, list[PartitionLag]] = {stage: [] for stage in STAGE_INPUT_TOPICS}
    for row in rows:
        out[by_topic[row.topic]].append(row)
    return out


def group_member_count(bootstrap: str, group: str, timeout_s: float = 10.0) -> int:
    """How many live members ``group`` has (0 when it is empty or unknown)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **confluent_config()})
    try:
        future = admin.describe_consumer_groups([group])[group]
        description = admin_result(admin, future, timeout_s, f"group {group}")
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot describe group {group}: {exc}") from exc
    return len(description.members or [])
