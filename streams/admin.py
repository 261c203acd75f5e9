"""Create catalog topics and report drift between the catalog and the broker."""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic

from streams.errors import TopicError
from streams.kafka_config import confluent_config
from streams.settings import Settings
from streams.topics import CATALOG, TopicSpec

__all__ = ["Drift", "admin_client", "check_topics", "ensure_topics"]

_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Drift:
    """One difference between the catalog and the live broker."""

    topic: str
    problem: str

    def line(self) -> str:
        """One human-readable line."""
        return f"{self.topic}: {self.problem}"


def admin_client(settings: Settings) -> AdminClient:
    """An admin client for the configured cluster."""
    return AdminClient(
        {"bootstrap.servers": settings.bootstrap_servers, "log_level": 3, **confluent_config()}
    )


def _live_topics(admin: AdminClient) -> dict[str, int]:
    try:
        meta = admin.list_topics(timeout=_TIMEOUT_S)
    except KafkaException as exc:
        raise TopicError(f"cannot list topics: {exc}") from exc
    return {name: len(t.partitions) for name, t in meta.topics.items()}


#: The worker's state-table changelog (Faust's, named ``<app id>-lead-state-changelog``).
#: ``ensure_topics`` creates it up front: a worker that starts before Faust has
#: declared it can see it missing from metadata and fail its first batches.
STATE_CHANGELOG = TopicSpec(
    "leadflow-lead-state-changelog",
    "leadflow.LeadState",
    "The per-lead state table's changelog (compacted; Faust reads it back on start).",
    retention_ms=-1,
    cleanup_policy="compact",
)


def ensure_topics(settings: Settings, catalog: tuple[TopicSpec, ...] = CATALOG) -> list[str]:
    """Create every catalog topic that is missing. Returns the names created.

    With the full catalog, the state table's changelog is created too (not
    listed in the result: it is Faust's topic, not part of the catalog).
    """
    admin = admin_client(settings)
    live = _live_topics(admin)
    specs = (*catalog, STATE_CHANGELOG) if catalog is CATALOG else catalog
    new = [
        NewTopic(
            spec.full_name(settings),
            num_partitions=spec.partition_count(settings),
            replication_factor=settings.topic_replication,
            config=spec.config(),
        )
        for spec in specs
        if spec.full_name(settings) not in live
    ]
    if not new:
        return []
    created: list[str] = []
    for name, future in admin.create_topics(new, request_timeout=_TIMEOUT_S).items():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                continue  # created concurrently by another process
            raise TopicError(f"cannot create topic {name}: {exc}") from exc
        created.append(name)
    _wait_visible(admin, created)
    changelog = STATE_CHANGELOG.full_name(settings)
    return [name for name in created if name != changelog]


def _wait_visible(admin: AdminClient, names: list[str]) -> None:
    """Wait until new topics show in metadata (creation is acked before that)."""
    deadline = time.monotonic() + _TIMEOUT_S
    while time.monotonic() < deadline:
        live = _live_topics(admin)
        if all(name in live for name in names):
            return
        time.sleep(0.1)
    raise TopicError(f"created topics did not appear in metadata within {_TIMEOUT_S:.0f} s")


def check_topics(settings: Settings, catalog: tuple[TopicSpec, ...] = CATALOG) -> list[Drift]:
    """Every difference between the catalog and the live topics (empty = none)."""
    admin = admin_client(settings)
    live = _live_topics(admin)
    drift: list[Drift] = []
    present: list[TopicSpec] = []
    for spec in catalog:
        name = spec.full_name(settings)
        if name not in live:
            drift.append(Drift(name, "missing"))
            continue
        want = spec.partition_count(settings)
        if live[name] != want:
            drift.append(Drift(name, f"has {live[name]} partitions, catalog says {want}"))
        present.append(spec)
    if not present:
        return drift
    resources = [ConfigResource("topic", s.full_name(settings)) for s in present]
    futures = admin.describe_configs(resources, request_timeout=_TIMEOUT_S)
    by_name = {s.full_name(settings): s for s in present}
    for resource, future in futures.items():
        try:
            configs = future.result()
        except KafkaException as exc:
            raise TopicError(f"cannot describe topic {resource.name}: {exc}") from exc
        for key, want_value in by_name[resource.name].config().items():
            got = configs.get(key)
            got_value = None if got is None else got.value
            if got_value != want_value:
                drift.append(
                    Drift(resource.name, f"{key} is {got_value}, catalog says {want_value}")
                )
    return sorted(drift, key=lambda d: (d.topic, d.problem))
