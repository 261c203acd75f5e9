"""The topic catalog: every topic leadflow owns, declared once.

Agents, the CLI, tests and the docs import topics from here. Names get the
``LEADFLOW_TOPIC_PREFIX`` prefix at run time; the message key on every topic
is the lead id (UTF-8), so one lead's events stay in order on one partition.

Faust also creates internal topics of its own (table changelogs, named
``<app id>-<table>-changelog``); those are not in this catalog.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.settings import Settings

__all__ = ["CATALOG", "TopicSpec", "by_name"]

_DAY_MS = 24 * 60 * 60 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, value schema, layout and retention."""

    name: str
    value_schema: str
    description: str
    retention_ms: int = 7 * _DAY_MS
    cleanup_policy: str = "delete"
    #: None means LEADFLOW_TOPIC_PARTITIONS (default 8).
    partitions: int | None = None
    extra_config: dict[str, str] = field(default_factory=dict)

    def full_name(self, settings: Settings) -> str:
        """The topic's name on the broker."""
        return settings.topic_name(self.name)

    def partition_count(self, settings: Settings) -> int:
        """Partitions this topic should have."""
        return self.partitions or settings.topic_partitions

    def config(self) -> dict[str, str]:
        """Topic-level configs leadflow sets and checks for drift."""
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            **self.extra_config,
        }


CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec(
        "raw",
        "leadflow.RawLead",
        "Leads as producers publish them (leadflow produce, or any producer using "
        "the schemas). Input of the enrich (LUCI) stage.",
        retention_ms=7 * _DAY_MS,
    ),
    TopicSpec(
        "enriched",
        "leadflow.EnrichedLead",
        "Validated, normalised, deduplicated and enriched leads. Input of the score stage.",
        retention_ms=7 * _DAY_MS,
    ),
    TopicSpec(
        "scored",
        "leadflow.ScoredLead",
        "Scored leads with qualification and priority tier. Input of the scheduler.",
        retention_ms=14 * _DAY_MS,
    ),
    TopicSpec(
        "touch-due",
        "leadflow.TouchDue",
        "Touches whose time and send window have come. Input of the send stage.",
        retention_ms=14 * _DAY_MS,
    ),
    TopicSpec(
        "sent",
        "leadflow.TouchSent",
        "The outcome of every touch (accepted, failed, ambiguous, skipped). Read by the "
        "scheduler to plan the next touch, and by analytics.",
        retention_ms=30 * _DAY_MS,
    ),
    TopicSpec(
        "inbound",
        "leadflow.InboundEvent",
        "Provider webhooks after signature checks: delivery receipts, replies, opt-outs, "
        "bounces. Stops sequences and records opt-outs.",
        retention_ms=30 * _DAY_MS,
    ),
    TopicSpec(
        "dead-letter",
        "leadflow.DeadLetter",
        "What a stage could not process, with the reason, where it came from and the "
        "original bytes. Redriven with `leadflow dlq redrive`.",
        retention_ms=30 * _DAY_MS,
    ),
)


def by_name(name: str) -> TopicSpec:
    """The catalog entry for base name ``name`` (``KeyError`` if unknown)."""
    for spec in CATALOG:
        if spec.name == name:
            return spec
    raise KeyError(name)
