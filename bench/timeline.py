"""Post-hoc measurement from Kafka record timestamps: when each lead reached each topic.

Every record carries the producer's create time (milliseconds). Reading the
five topics of a run after it ends gives, per lead, the time it was
published to ``raw`` and the time each stage's output for it was produced —
no instrumentation in the pipeline. For ``touch-due`` and ``sent`` only
touch 1 counts (the first touch of the sequence).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench.records import WARMUP_PREFIX
from bench.stats import latencies, summary_ms
from streams.codec import AvroCodec
from streams.topic_reader import read_records

__all__ = [
    "STAGES",
    "TOPICS",
    "Timeline",
    "end_offsets",
    "read_timeline",
]

#: Topics of a lead's path to its first touch, in order.
TOPICS = ("raw", "enriched", "scored", "touch-due", "sent")
#: Stage name -> (input topic, output topic).
STAGES = {
    "enrich": ("raw", "enriched"),
    "score": ("enriched", "scored"),
    "schedule": ("scored", "touch-due"),
    "send": ("touch-due", "sent"),
}
_SCHEMAS = {"touch-due": "leadflow.TouchDue", "sent": "leadflow.TouchSent"}


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"leadflow-bench-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52428800,
        }
    )


def end_offsets(bootstrap: str, topic: str, consumer: Consumer | None = None) -> int:
    """Sum of the high watermarks of ``topic``'s partitions (records ever written)."""
    own = consumer is None
    c = consumer or _consumer(bootstrap)
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.partitions
        )
    finally:
        if own:
            c.close()


@dataclass
class Timeline:
    """Per topic, lead id -> create time (ms) of its first record there."""

    at: dict[str, dict[str, int]] = field(default_factory=dict)
    #: mean value size in bytes per topic
    value_bytes: dict[str, float] = field(default_factory=dict)
    #: first-touch ``sent`` records by status (accepted, failed, skipped, ...), repeats included
    sent_status: dict[str, int] = field(default_factory=dict)

    def first_raw_ms(self) -> int:
        """Create time of the first raw record."""
        return min(self.at["raw"].values())

    def last_sent_ms(self) -> int:
        """Create time of the last lead's first-touch ``sent`` record."""
        return max(self.at["sent"].values())

    def span_s(self) -> float:
        """Seconds from the first raw record to the last lead's first ``sent``."""
        return (self.last_sent_ms() - self.first_raw_ms()) / 1000

    def stage_latency(self, stage: str) -> list[float]:
        """Milliseconds each lead spent in ``stage`` (input record to output record)."""
        source, target = STAGES[stage]
        return latencies(self.at[source], self.at[target])

    def end_to_end(self) -> list[float]:
        """Milliseconds from each lead's raw record to its first-touch ``sent``."""
        return latencies(self.at["raw"], self.at["sent"])

    def metrics(self) -> dict[str, Any]:
        """Counts, per-stage and end-to-end latency summaries."""
        stages = {name: summary_ms(self.stage_latency(name)) for name in STAGES}
        e2e = self.end_to_end()
        worst = [s["p99_ms"] for s in stages.values() if s["p99_ms"] is not None]
        return {
            "counts": {topic: len(self.at.get(topic, {})) for topic in TOPICS},
            "stages": stages,
            "end_to_end": summary_ms(e2e),
            "worst_stage_p99_ms": max(worst) if worst else None,
            "value_bytes": {t: round(v, 1) for t, v in self.value_bytes.items()},
            "sent_status": dict(self.sent_status),
        }


def read_timeline(
    bootstrap: str,
    topic_name: Callable[[str], str],
    *,
    groups: Mapping[str, str] | None = None,
) -> dict[str, Timeline]:
    """Read the five topics of a run (``topic_name`` maps a base name to its full name).

    ``groups`` maps a name to a key prefix (leads of one campaign); the
    default is one group, ``""``, of every lead. Warm-up leads are skipped.
    """
    prefixes = dict(groups or {"": ""})
    out = {name: Timeline() for name in prefixes}
    for base in TOPICS:
        codec = AvroCodec(_SCHEMAS[base]) if base in _SCHEMAS else None
        first: dict[str, dict[str, int]] = {name: {} for name in prefixes}
        sizes: dict[str, list[int]] = {name: [0, 0] for name in prefixes}
        for record in read_records(bootstrap, topic_name(base), timeout_s=60.0):
            key, value, ts = record.key or b"", record.value or b"", record.timestamp_ms
            lead = key.decode("utf-8", "replace")
            if lead.startswith(WARMUP_PREFIX):
                continue
            group = next((n for n, p in prefixes.items() if lead.startswith(p)), None)
            if group is None:
                continue
            if codec is not None:
                fields = codec.decode(value)
                if int(fields["touch"]) != 1:
                    continue
                if base == "sent":
                    status = out[group].sent_status
                    status[fields["status"]] = status.get(fields["status"], 0) + 1
            sizes[group][0] += len(value)
            sizes[group][1] += 1
            seen = first[group]
            if lead not in seen or ts < seen[lead]:
                seen[lead] = ts
        for name, timeline in out.items():
            timeline.at[base] = first[name]
            total, count = sizes[name]
            timeline.value_bytes[base] = total / count if count else 0.0
    return out
