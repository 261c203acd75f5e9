"""Topics and the state table are declared with our codecs."""

from __future__ import annotations

from agents import topology
from streams.codec import MARKER, FaustAvroCodec
from streams.topics import CATALOG


def test_every_catalog_topic_is_raw_bytes() -> None:
    for spec in CATALOG:
        topic = topology.topic(spec.name)
        assert topic.value_serializer == "raw"
        assert topic.key_serializer == "raw"


def test_state_table_changelog_is_avro_not_json() -> None:
    table = topology.lead_state_table
    assert table.key_serializer == "raw"
    assert isinstance(table.value_serializer, FaustAvroCodec)
    changelog = table.changelog_topic
    assert isinstance(changelog.value_serializer, FaustAvroCodec)
    record = {
        "campaign_id": "c",
        "lead_id": "l",
        "state": "new",
        "touch": 0,
        "reason": None,
        "updated_at": 0,
        "version": 1,
    }
    payload = changelog.value_serializer.dumps(record)
    assert payload[:2] == MARKER
