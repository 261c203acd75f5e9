"""Topics and tables, declared once; every agent imports them from here.

All topics carry raw bytes: stages decode with the Avro codec themselves so a
payload that does not decode becomes a dead letter instead of being skipped
by Faust. The state table's values use the Avro codec (``leadflow.LeadState``)
and its changelog is compacted by Faust.
"""

from __future__ import annotations

from typing import Any

import faust

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


#: lead id (bytes) -> leadflow.LeadState record.
lead_state_table = app.Table(
    "lead-state",
    schema=faust.Schema(
        key_type=bytes,
        key_serializer="raw",
        value_serializer=FaustAvroCodec("leadflow.LeadState", subject="lead-state"),
    ),
    partitions=_settings.topic_partitions,
    help="Current state of every lead (see streams/state_machine.py).",
)
