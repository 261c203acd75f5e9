"""Cross-check our codec against the Apache Avro reference library (``avro``).

Two independent implementations must agree on the single-object header, the
fingerprint and the body, in both directions.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.io import BinaryDecoder, BinaryEncoder, DatumReader, DatumWriter
from fastavro import schemaless_reader, schemaless_writer
from fastavro.utils import generate_many

from streams.codec import HEADER_SIZE, MARKER, AvroCodec
from streams.schemas import SchemaRegistry, SchemaVersion
from streams.settings import REPO_ROOT

REGISTRY = SchemaRegistry.from_dir(REPO_ROOT / "schemas")
ALL_VERSIONS = list(REGISTRY)
RECORDS_PER_SCHEMA = 25


def reference_schema(version: SchemaVersion) -> avro.schema.Schema:
    return avro.schema.parse(json.dumps(version.definition))


def reference_read(body: bytes, writer: SchemaVersion, reader: SchemaVersion) -> Any:
    """Decode a body with avro; also check avro used up exactly the whole body."""
    stream = io.BytesIO(body)
    record = DatumReader(reference_schema(writer), reference_schema(reader)).read(
        BinaryDecoder(stream)
    )
    assert stream.tell() == len(body)
    return record


def reference_write(record: Any, version: SchemaVersion) -> bytes:
    out = io.BytesIO()
    DatumWriter(reference_schema(version)).write(record, BinaryEncoder(out))
    return out.getvalue()


def fastavro_payload(record: Any, version: SchemaVersion) -> bytes:
    """Single-object payload of any version (the codec itself writes only the current one)."""
    out = io.BytesIO()
    schemaless_writer(out, version.parsed, record)
    return MARKER + version.fingerprint + out.getvalue()


@pytest.fixture
def seeded() -> Iterator[None]:
    """fastavro's generators use the global ``random``: make them repeatable."""
    state = random.getstate()
    random.seed(20240501)
    yield
    random.setstate(state)


def ids(version: SchemaVersion) -> str:
    return version.label.replace(" ", "-")


@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids)
def test_fingerprint_matches_avro(version: SchemaVersion) -> None:
    # The canonical form carries no logical types, so avro fingerprints it as we do.
    from_canonical = avro.schema.parse(version.canonical_form)
    assert from_canonical.canonical_form == version.canonical_form
    assert from_canonical.fingerprint("CRC-64-AVRO") == version.fingerprint

    # avro 1.12 canonicalises a logical-type primitive as {"type":"long"} where the
    # spec ([PRIMITIVES]) and Java write "long"; that is the only difference.
    reference = reference_schema(version)
    normalised = re.sub(r'\{"type":"(\w+)"\}', r'"\1"', reference.canonical_form)
    assert normalised == version.canonical_form
    if '"logicalType"' in json.dumps(version.definition):
        assert reference.fingerprint("CRC-64-AVRO") != version.fingerprint


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids)
def test_avro_reads_our_payloads(version: SchemaVersion) -> None:
    current = REGISTRY.current(version.full_name)
    codec = AvroCodec(version.full_name, REGISTRY)
    for record in generate_many(version.parsed, RECORDS_PER_SCHEMA):
        payload = codec.encode(record) if version is current else fastavro_payload(record, version)
        assert payload[:2] == b"\xc3\x01"
        assert payload[2:HEADER_SIZE] == avro.schema.parse(version.canonical_form).fingerprint()
        ours = codec.decode(payload)
        body = payload[HEADER_SIZE:]
        assert reference_read(body, version, current) == ours
        if version is not current:  # also as written, without resolution
            plain = schemaless_reader(io.BytesIO(body), version.parsed, None)
            assert reference_read(body, version, version) == plain


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("version", ALL_VERSIONS, ids=ids)
def test_we_read_avro_payloads(version: SchemaVersion) -> None:
    codec = AvroCodec(version.full_name, REGISTRY)
    current = REGISTRY.current(version.full_name)
    for generated in generate_many(version.parsed, RECORDS_PER_SCHEMA):
        # Round-trip once through fastavro so times are datetimes, as avro writes them.
        record = schemaless_reader(
            io.BytesIO(fastavro_payload(generated, version)[HEADER_SIZE:]), version.parsed, None
        )
        header = MARKER + avro.schema.parse(version.canonical_form).fingerprint()
        payload = header + reference_write(record, version)
        expected = reference_read(payload[HEADER_SIZE:], version, current)
        assert codec.decode(payload) == expected
        if version is current:
            assert codec.decode(payload) == record


def test_old_raw_lead_resolves_the_same_in_both_libraries() -> None:
    v1, v2 = REGISTRY.versions("leadflow.RawLead")
    record = {
        "campaign_id": "c",
        "lead_id": "L1",
        "email": "a@example.com",
        "attributes": {"k": "v"},
        "event_time": datetime(2024, 5, 1, 12, tzinfo=UTC),
    }
    filled = {f["name"]: f.get("default") for f in v1.definition["fields"]}
    payload = MARKER + v1.fingerprint + reference_write({**filled, **record}, v1)
    ours = AvroCodec("leadflow.RawLead", REGISTRY).decode(payload)
    assert ours == reference_read(payload[HEADER_SIZE:], v1, v2)
    assert (ours["source"], ours["source_line"], ours["email"]) == (
        "unknown",
        None,
        "a@example.com",
    )


# --- our compatibility check agrees with avro's -----------------------------------


def _field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "doc": "d", **extra}


PAIRS: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = [
    ([_field("a", "string")], [_field("a", "string"), _field("b", "long", default=0)]),
    ([_field("a", "string")], [_field("a", "string"), _field("b", "long")]),
    ([_field("a", "int")], [_field("a", "long")]),
    ([_field("a", "long")], [_field("a", "int")]),
    ([_field("a", "string")], [_field("a", "bytes")]),
    ([_field("a", "string")], [_field("a", ["null", "string"], default=None)]),
    ([_field("a", ["null", "string"], default=None)], [_field("a", "string")]),
    ([_field("a", "string")], [_field("b", "string", aliases=["a"])]),
    ([_field("a", "string")], [_field("b", "string")]),
    (
        [_field("a", {"type": "map", "values": "int"})],
        [_field("a", {"type": "map", "values": "double"})],
    ),
    (
        [_field("a", {"type": "array", "items": "long"})],
        [_field("a", {"type": "array", "items": "int"})],
    ),
]


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_compatibility_check_agrees_with_avro(
    tmp_path: Path, old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> None:
    def schema(version: int, fields: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "type": "record",
            "name": "RawLead",
            "namespace": "leadflow",
            "version": version,
            "doc": "d",
            "fields": fields,
        }

    for version, fields in ((1, old), (2, new)):
        (tmp_path / f"raw_lead.v{version}.avsc").write_text(json.dumps(schema(version, fields)))
    ours_ok = SchemaRegistry.from_dir(tmp_path).check_compatibility() == []
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(schema(2, new))), avro.schema.parse(json.dumps(schema(1, old)))
    )
    assert ours_ok == (result.compatibility is SchemaCompatibilityType.compatible)


def test_real_schema_history_is_compatible_for_avro_too() -> None:
    for name in REGISTRY.names():
        reader = reference_schema(REGISTRY.current(name))
        for old in REGISTRY.versions(name)[:-1]:
            result = ReaderWriterCompatibilityChecker().get_compatibility(
                reader, reference_schema(old)
            )
            assert result.compatibility is SchemaCompatibilityType.compatible, old.label
