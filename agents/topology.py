"""Topics and tables, declared once; every agent imports them from here.

All topics carry raw bytes: stages decode with the Avro codec themselves so a
payload that does not decode becomes a dead letter instead of being skipped
by Faust. The state table's values use the Avro codec (``leadflow.LeadState``)
and its changelog is compacted by Faust.
"""

from __future__ import annotations

from typing import Any, cast

from streams.app import app
from streams.codec import FaustAvroCodec
from streams.settings import get_settings
from streams.topics import by_name

__all__ = ["lead_state_table", "topic"]

_settings = get_settings()
_topics: dict[str, Any] = {}


def topic(base: str) -> Any:
    """The Faust topic for catalog topic ``base`` (raw bytes in and out)."""
    if base not in _topics:
        spec = by_name(base)
        _topics[base] = app.topic(
            spec.full_name(_settings),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=spec.partition_count(_settings),
        )
    return _topics[base]


_STATE_CODEC = FaustAvroCodec("leadflow.LeadState", subject="lead-state")

#: campaign id + "\x1f" + lead id (bytes) -> leadflow.LeadState record.
lead_state_table = app.Table(
    "lead-state",
    key_type=bytes,  # Faust picks the "raw" key serializer from this
    partitions=_settings.topic_partitions,
    help="Current state of every lead (see streams/state_machine.py).",
    # Faust takes a table's serializers from key_type/value_type only and falls
    # back to JSON, so the changelog is declared here with the Avro codec (and
    # the settings Faust gives its own changelogs: compacted, internal).
    changelog_topic=app.topic(
        f"{app.conf.id}-lead-state-changelog",
        key_type=bytes,
        key_serializer="raw",
        value_serializer=_STATE_CODEC,
        partitions=_settings.topic_partitions,
        compacting=True,
        deleting=False,
        acks=False,
        internal=True,
    ),
)
# Changelog writes pass the table's own serializer explicitly (overriding the
# topic's), so the table must name the codec too.
cast(Any, lead_state_table).value_serializer = _STATE_CODEC


@app.on_before_shutdown.connect
async def _close_pipeline(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    """Close provider sessions and database connections when the worker stops."""
    from agents.context import close_context

    await close_context()
