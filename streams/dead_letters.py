"""Reading the ``dead-letter`` topic (for reports, tests and ``leadflow dlq``)."""

from __future__ import annotations

from typing import Any

from streams.codec import AvroCodec
from streams.settings import Settings
from streams.topic_reader import read_to_end

__all__ = ["read_dead_letters"]


def read_dead_letters(settings: Settings, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    """Every record on ``dead-letter`` now (up to the end offsets), decoded."""
    topic = settings.topic_name("dead-letter")
    codec = AvroCodec("leadflow.DeadLetter", subject=topic)
    return [
        codec.decode(value)
        for _, value in read_to_end(settings.bootstrap_servers, topic, timeout_s)
        if value is not None
    ]
