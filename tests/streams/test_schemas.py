"""The schema files and the registry: loading, fingerprints, compatibility, lint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streams.errors import SchemaLoadError, UnknownFingerprintError
from streams.schemas import (
    SchemaRegistry,
    crc64_avro,
    default_registry,
    load_schema_file,
)
from streams.settings import REPO_ROOT

SCHEMAS_DIR = REPO_ROOT / "schemas"

TS = {"type": "long", "logicalType": "timestamp-millis"}


def record(name: str, version: int, fields: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A minimal documented record schema."""
    return {
        "type": "record",
        "name": name,
        "namespace": "leadflow",
        "version": version,
        "doc": f"{name} for tests.",
        "fields": fields,
        **extra,
    }


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, "doc": f"{name} doc.", **extra}


def write(folder: Path, file_name: str, schema: Any) -> Path:
    path = folder / file_name
    path.write_text(schema if isinstance(schema, str) else json.dumps(schema))
    return path


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.from_dir(SCHEMAS_DIR)


# --- the real schema files ----------------------------------------------------------


def test_every_record_type_is_present(registry: SchemaRegistry) -> None:
    assert registry.names() == (
        "leadflow.DeadLetter",
        "leadflow.EnrichedLead",
        "leadflow.InboundEvent",
        "leadflow.LeadState",
        "leadflow.RawLead",
        "leadflow.ScoredLead",
        "leadflow.TouchDue",
        "leadflow.TouchSent",
    )
    assert [v.version for v in registry.versions("leadflow.RawLead")] == [1, 2]
    assert registry.current("leadflow.RawLead").path.name == "raw_lead.v2.avsc"
    assert [v.version for v in registry.versions("leadflow.TouchDue")] == [1, 2]
    assert len(registry) == sum(len(registry.versions(n)) for n in registry.names()) == 11


def test_raw_lead_v2_adds_source_fields_with_defaults(registry: SchemaRegistry) -> None:
    v1, v2 = registry.versions("leadflow.RawLead")
    v1_fields = [f["name"] for f in v1.definition["fields"]]
    v2_fields = {f["name"]: f for f in v2.definition["fields"]}
    assert set(v2_fields) - set(v1_fields) == {"source", "source_line"}
    assert v2_fields["source"]["default"] == "unknown"
    assert v2_fields["source_line"]["default"] is None
    assert v1.fingerprint != v2.fingerprint


def test_times_are_timestamp_millis_and_kinds_are_strings(registry: SchemaRegistry) -> None:
    times = {"event_time", "due_at", "sent_at", "received_at", "failed_at", "updated_at"}
    for version in registry:
        for f in version.definition["fields"]:
            if f["name"] in times:
                assert f["type"] == TS, (version.label, f["name"])
            if f["name"] in {"state", "kind", "status", "channel", "tier"}:
                assert "enum" not in json.dumps(f["type"]), (version.label, f["name"])


def test_fingerprints_are_unique_and_indexed(registry: SchemaRegistry) -> None:
    fingerprints = [v.fingerprint for v in registry]
    assert all(len(fp) == 8 for fp in fingerprints)
    assert len(set(fingerprints)) == len(fingerprints)
    for version in registry:
        assert registry.by_fingerprint(version.fingerprint) is version
        assert registry.find(version.fingerprint) is version


def _rabin64(data: bytes) -> int:
    """CRC-64-AVRO written out from the Avro specification, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    result = empty
    for byte in data:
        result = (result >> 8) ^ table[(result ^ byte) & 0xFF]
    return result


def test_fingerprint_is_little_endian_crc64_of_canonical_form(registry: SchemaRegistry) -> None:
    # Known vectors from the Avro spec's test data (as signed 64-bit integers).
    assert int.from_bytes(crc64_avro('"null"'), "little", signed=True) == 7195948357588979594
    assert int.from_bytes(crc64_avro('"int"'), "little", signed=True) == 8247732601305521295
    for version in registry:
        expected = _rabin64(version.canonical_form.encode()).to_bytes(8, "little")
        assert version.fingerprint == expected


def test_canonical_form_drops_docs_defaults_and_logical_types(registry: SchemaRegistry) -> None:
    form = registry.current("leadflow.RawLead").canonical_form
    assert form.startswith('{"name":"leadflow.RawLead","type":"record","fields":[')
    assert '"doc"' not in form
    assert '"default"' not in form
    assert '"version"' not in form
    assert '{"name":"event_time","type":"long"}' in form


def test_real_schemas_are_compatible_and_lint_clean(registry: SchemaRegistry) -> None:
    assert registry.check_compatibility() == []
    assert registry.lint() == []


def test_default_registry_is_loaded_once() -> None:
    first = default_registry()
    assert first is default_registry()
    assert "leadflow.RawLead" in first.names()


def test_unknown_name_and_fingerprint_raise_typed_errors(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaLoadError, match=r"no schema named 'leadflow\.Nope'"):
        registry.current("leadflow.Nope")
    with pytest.raises(UnknownFingerprintError, match="0102030405060708"):
        registry.by_fingerprint(bytes(range(1, 9)))
    assert registry.find(bytes(8)) is None


# --- loading errors -----------------------------------------------------------------

GOOD_FIELDS = [field("lead_id", "string"), field("at", TS)]


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("RawLead.v1.avsc", record("RawLead", 1, GOOD_FIELDS), "file name must be"),
        ("raw_lead.v01.avsc", record("RawLead", 1, GOOD_FIELDS), "file name must be"),
        ("raw_lead.v1.avsc", record("ScoredLead", 1, GOOD_FIELDS), "expected scored_lead.v1"),
        ("raw_lead.v2.avsc", record("RawLead", 1, GOOD_FIELDS), 'schema has "version": 1'),
        (
            "raw_lead.v1.avsc",
            {k: v for k, v in record("RawLead", 1, GOOD_FIELDS).items() if k != "version"},
            '"version": null',
        ),
        (
            "raw_lead.v1.avsc",
            record("RawLead", 1, GOOD_FIELDS, namespace="other"),
            "namespace 'leadflow'",
        ),
        ("raw_lead.v1.avsc", '{"type": "record",', "not valid JSON"),
        ("raw_lead.v1.avsc", '"string"', "top level must be a record"),
        (
            "raw_lead.v1.avsc",
            record("RawLead", 1, [field("x", "strnig")]),
            "invalid Avro schema",
        ),
        (
            "raw_lead.v1.avsc",
            record("RawLead", 1, [field("x", "string", default=None)]),
            "invalid Avro schema",
        ),
    ],
)
def test_bad_files_raise_schema_load_error_naming_the_file(
    tmp_path: Path, file_name: str, content: Any, message: str
) -> None:
    path = write(tmp_path, file_name, content)
    with pytest.raises(SchemaLoadError) as caught:
        SchemaRegistry.from_dir(tmp_path)
    text = str(caught.value)
    assert message in text
    assert str(path) in text
    assert "\n" not in text


def test_a_doc_only_change_is_not_a_new_version(tmp_path: Path) -> None:
    write(tmp_path, "raw_lead.v1.avsc", record("RawLead", 1, GOOD_FIELDS))
    changed = record("RawLead", 2, GOOD_FIELDS, doc="Better words.")
    write(tmp_path, "raw_lead.v2.avsc", changed)
    with pytest.raises(SchemaLoadError, match=r"same canonical form .* as raw_lead\.v1\.avsc"):
        SchemaRegistry.from_dir(tmp_path)


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SchemaLoadError, match=r"no \.avsc files"):
        SchemaRegistry.from_dir(tmp_path)
    with pytest.raises(SchemaLoadError, match="does not exist"):
        SchemaRegistry.from_dir(tmp_path / "nope")


def test_load_schema_file_reads_version_and_name(tmp_path: Path) -> None:
    path = write(tmp_path, "touch_due.v3.avsc", record("TouchDue", 3, GOOD_FIELDS))
    loaded = load_schema_file(path)
    assert (loaded.full_name, loaded.version, loaded.label) == (
        "leadflow.TouchDue",
        3,
        "leadflow.TouchDue v3",
    )
    assert loaded.fingerprint_hex == loaded.fingerprint.hex()


# --- compatibility ------------------------------------------------------------------


def pair(tmp_path: Path, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> SchemaRegistry:
    write(tmp_path, "raw_lead.v1.avsc", record("RawLead", 1, old))
    write(tmp_path, "raw_lead.v2.avsc", record("RawLead", 2, new))
    return SchemaRegistry.from_dir(tmp_path)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # a new field with a default
        ([field("a", "string")], [field("a", "string"), field("b", "long", default=0)]),
        # Avro promotions
        ([field("a", "int")], [field("a", "long")]),
        ([field("a", "long")], [field("a", "double")]),
        ([field("a", "string")], [field("a", "bytes")]),
        # widening to a nullable union
        ([field("a", "string")], [field("a", ["null", "string"], default=None)]),
        # a rename with an alias
        ([field("a", "string")], [field("b", "string", aliases=["a"])]),
        # a dropped field (readers ignore it; lint flags it)
        ([field("a", "string"), field("b", "int")], [field("a", "string")]),
    ],
)
def test_compatible_changes_pass(tmp_path: Path, old: Any, new: Any) -> None:
    assert pair(tmp_path, old, new).check_compatibility() == []


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            [field("a", "string")],
            [field("a", "string"), field("b", "long")],
            "leadflow.RawLead.b: not written by the writer and has no default",
        ),
        ([field("a", "string")], [field("a", "int")], "written as string, cannot be read as int"),
        ([field("a", "long")], [field("a", "int")], "written as long, cannot be read as int"),
        (
            [field("a", ["null", "string"], default=None)],
            [field("a", "string")],
            "leadflow.RawLead.a: written as null, cannot be read as string",
        ),
        (
            [field("a", {"type": "array", "items": "string"})],
            [field("a", {"type": "array", "items": "int"})],
            "leadflow.RawLead.a[]: written as string",
        ),
        (
            [field("a", "string")],
            [field("a", ["null", "int"], default=None)],
            "no branch of the reader's union",
        ),
    ],
)
def test_incompatible_changes_are_reported(
    tmp_path: Path, old: Any, new: Any, message: str
) -> None:
    problems = pair(tmp_path, old, new).check_compatibility()
    assert problems, "expected a problem"
    assert all(p.subject == "leadflow.RawLead v1 -> v2" for p in problems)
    assert any(message in str(p) for p in problems), problems


# --- lint ---------------------------------------------------------------------------


def test_lint_reports_house_rule_breaks(tmp_path: Path) -> None:
    write(
        tmp_path,
        "raw_lead.v1.avsc",
        record("RawLead", 1, [field("a", "string"), field("gone", "string")]),
    )
    write(
        tmp_path,
        "raw_lead.v3.avsc",
        record(
            "RawLead",
            3,
            [
                {"name": "a", "type": "string"},
                field("b", ["null", "string"], default="x"),
            ],
        ),
    )
    messages = [str(p) for p in SchemaRegistry.from_dir(tmp_path).lint()]
    assert "leadflow.RawLead: versions [1, 3] have a gap; old files are kept" in messages
    assert (
        "raw_lead.v3.avsc: field 'gone' of v1 was removed or renamed without an alias" in messages
    )
    assert "raw_lead.v3.avsc: field leadflow.RawLead.a has no doc" in messages
    assert any(
        "leadflow.RawLead.b: a union's default must match its first branch" in m for m in messages
    )
