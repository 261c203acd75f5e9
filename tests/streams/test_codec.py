"""The Avro codec: round trips, evolution, typed errors, the Faust codec, JSON."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import faust
import pytest
from fastavro import schemaless_writer
from faust.exceptions import ValueDecodeError
from faust.serializers import Registry
from faust.serializers import codecs as faust_codecs

from streams.codec import (
    HEADER_SIZE,
    MARKER,
    AvroCodec,
    FaustAvroCodec,
    decode_payload_any,
    record_from_json,
    record_to_json,
)
from streams.errors import (
    CodecError,
    NotSingleObjectError,
    SchemaLoadError,
    SchemaMismatchError,
    TruncatedPayloadError,
    UnknownFingerprintError,
)
from streams.schemas import SchemaRegistry
from streams.settings import REPO_ROOT

T0 = datetime(2024, 5, 1, 14, 30, 15, 250000, tzinfo=UTC)
T1 = datetime(2024, 5, 2, 14, 30, tzinfo=UTC)

#: One realistic record per record type (current versions).
SAMPLES: dict[str, dict[str, Any]] = {
    "leadflow.RawLead": {
        "campaign_id": "q3-saas-founders",
        "lead_id": "L-000123",
        "first_name": "Jane",
        "last_name": "Doe",
        "email": " Jane.Doe@Example.com ",
        "phone": "(512) 555-0100",
        "company": "Acme Analytics",
        "title": "VP of Sales",
        "timezone": None,
        "country": "US",
        "state": "TX",
        "attributes": {"linkedin": "in/janedoe", "list": "webinar-may"},
        "event_time": T0,
        "source": "csv",
        "source_line": 42,
    },
    "leadflow.EnrichedLead": {
        "campaign_id": "q3-saas-founders",
        "lead_id": "L-000123",
        "identity_key": "email:jane.doe@example.com",
        "first_name": "Jane",
        "last_name": "Doe",
        "email": "jane.doe@example.com",
        "phone_e164": "+15125550100",
        "company": "Acme Analytics",
        "title": "VP of Sales",
        "timezone": "America/Chicago",
        "country": "US",
        "state": "TX",
        "attributes": {"list": "webinar-may"},
        "industry": "software",
        "company_size": 180,
        "seniority": "vp",
        "revenue_band": "10m-50m",
        "enrichment_cached": True,
        "duplicate_of": None,
        "event_time": T0,
    },
    "leadflow.ScoredLead": {
        "campaign_id": "q3-saas-founders",
        "lead_id": "L-000123",
        "identity_key": "email:jane.doe@example.com",
        "score": 87.5,
        "tier": "A",
        "qualified": True,
        "reasons": ["title_match", "company_size_fit"],
        "first_name": "Jane",
        "last_name": "Doe",
        "email": "jane.doe@example.com",
        "phone_e164": "+15125550100",
        "company": "Acme Analytics",
        "title": "VP of Sales",
        "timezone": "America/Chicago",
        "industry": "software",
        "event_time": T0,
        "state": "TX",
        "country": "US",
    },
    "leadflow.TouchDue": {
        "campaign_id": "q3-saas-founders",
        "lead_id": "L-000123",
        "touch": 2,
        "channel": "voice",
        "persona": "gianna",
        "template": "intro-call",
        "variant": "b",
        "due_at": T1,
        "priority": 90,
        "tier": "A",
        "attempt": 1,
        "event_time": T0,
        "to_phone": "+15128675309",
        "to_email": None,
        "first_name": "Ana",
        "last_name": "Nguyen",
        "company": "Acme Solar",
        "title": "Owner",
        "timezone": "America/Chicago",
        "state": "TX",
        "identity_key": "ab" * 32,
    },
    "leadflow.TouchSent": {
        "campaign_id": "q3-saas-founders",
        "lead_id": "L-000123",
        "touch": 1,
        "channel": "sms",
        "provider": "sim",
        "status": "accepted",
        "provider_message_id": "SM-8f2a",
        "idempotency_key": "q3-saas-founders:L-000123:1",
        "cost_units": 1.0,
        "sent_at": T1,
        "error": None,
        "event_time": T0,
    },
    "leadflow.InboundEvent": {
        "event_id": "evt-77d1",
        "kind": "reply",
        "provider": "sim",
        "channel": "sms",
        "provider_message_id": "SM-8f2a",
        "campaign_id": "q3-saas-founders",
        "lead_id": "L-000123",
        "body": "Sounds good, call me Thursday",
        "status": None,
        "received_at": T1,
    },
    "leadflow.DeadLetter": {
        "original_topic": "enriched",
        "original_partition": 3,
        "original_offset": 1_234_567_890_123,
        "original_key": b"L-000123",
        "stage": "score",
        "reason": "schema_mismatch",
        "error_class": "SchemaMismatchError",
        "error_message": "record does not match its schema (enriched): ...",
        "attempt": 3,
        "payload": b"\xc3\x01\x00\xff raw bytes \x00",
        "campaign_id": "q3-saas-founders",
        "lead_id": "L-000123",
        "failed_at": T1,
        "history": [
            {
                "stage": "score",
                "reason": "provider_timeout",
                "error_class": "ProviderError",
                "error_message": "timed out after 5 s",
                "failed_at": T0,
            }
        ],
    },
    "leadflow.LeadState": {
        "campaign_id": "q3-saas-founders",
        "lead_id": "L-000123",
        "state": "contacted",
        "touch": 1,
        "reason": None,
        "updated_at": T1,
        "version": 7,
    },
}


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.from_dir(REPO_ROOT / "schemas")


@pytest.fixture(scope="module")
def raw(registry: SchemaRegistry) -> AvroCodec:
    return AvroCodec("leadflow.RawLead", registry, subject="raw")


def v1_payload(registry: SchemaRegistry, record: dict[str, Any]) -> bytes:
    """What a producer still on RawLead v1 wrote."""
    v1 = registry.versions("leadflow.RawLead")[0]
    out = io.BytesIO()
    schemaless_writer(out, v1.parsed, record)
    return MARKER + v1.fingerprint + out.getvalue()


def assert_one_line_naming(error: CodecError, subject: str) -> None:
    text = str(error)
    assert "\n" not in text
    assert f"({subject})" in text


# --- round trips --------------------------------------------------------------------


def test_samples_cover_every_record_type(registry: SchemaRegistry) -> None:
    assert set(SAMPLES) == set(registry.names())
    for name, sample in SAMPLES.items():
        fields = [f["name"] for f in registry.current(name).definition["fields"]]
        assert sorted(sample) == sorted(fields), name


@pytest.mark.parametrize("full_name", sorted(SAMPLES))
def test_every_schema_round_trips(registry: SchemaRegistry, full_name: str) -> None:
    codec = AvroCodec(full_name, registry)
    payload = codec.encode(SAMPLES[full_name])
    assert payload[:HEADER_SIZE] == MARKER + registry.current(full_name).fingerprint
    assert codec.decode(payload) == SAMPLES[full_name]


def test_times_decode_as_aware_utc_and_encode_from_millis(raw: AvroCodec) -> None:
    millis = int(T0.timestamp() * 1000)
    decoded = raw.decode(raw.encode({**SAMPLES["leadflow.RawLead"], "event_time": millis}))
    assert decoded["event_time"] == T0
    assert decoded["event_time"].tzinfo is not None
    naive = raw.decode(
        raw.encode({**SAMPLES["leadflow.RawLead"], "event_time": T0.replace(tzinfo=None)})
    )
    assert naive["event_time"] == T0


def test_missing_optional_fields_take_their_defaults(raw: AvroCodec) -> None:
    decoded = raw.decode(raw.encode({"campaign_id": "c", "lead_id": "L1", "event_time": T0}))
    assert decoded["email"] is None
    assert decoded["attributes"] == {}
    assert decoded["source"] == "unknown"


def test_extra_keys_are_ignored(raw: AvroCodec) -> None:
    record = {**SAMPLES["leadflow.RawLead"], "__faust": {"ns": "x"}, "extra": 1}
    assert raw.decode(raw.encode(record)) == SAMPLES["leadflow.RawLead"]


# --- evolution ----------------------------------------------------------------------


def test_raw_lead_v1_record_reads_with_v2_defaults(
    registry: SchemaRegistry, raw: AvroCodec
) -> None:
    old = {
        k: v for k, v in SAMPLES["leadflow.RawLead"].items() if k not in {"source", "source_line"}
    }
    payload = v1_payload(registry, old)
    assert payload[2:HEADER_SIZE] == registry.versions("leadflow.RawLead")[0].fingerprint
    decoded = raw.decode(payload)
    assert decoded == {**old, "source": "unknown", "source_line": None}
    assert raw.writer_of(payload).version == 1


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "shown"),
    [
        (b'{"lead_id": "L1"}', "starts with 7b 22 6c 65, expected c3 01 (looks like JSON)"),
        (b"\x00\x00\x00\x00\x07rest", "00 00 00 00, expected c3 01 (Confluent wire format?"),
        (b"\xc3", "starts with c3, expected c3 01"),
        (b"", "payload is empty"),
    ],
)
def test_not_single_object(raw: AvroCodec, payload: bytes, shown: str) -> None:
    with pytest.raises(NotSingleObjectError) as caught:
        raw.decode(payload)
    assert shown in str(caught.value)
    assert_one_line_naming(caught.value, "raw")


def test_non_bytes_is_not_single_object(raw: AvroCodec) -> None:
    with pytest.raises(NotSingleObjectError, match=r"expected bytes, got str"):
        raw.decode("C301")  # type: ignore[arg-type]


def test_unknown_fingerprint(raw: AvroCodec) -> None:
    payload = MARKER + bytes.fromhex("0011223344556677") + b"\x00"
    with pytest.raises(UnknownFingerprintError) as caught:
        raw.decode(payload)
    assert "0011223344556677 matches no schema" in str(caught.value)
    assert_one_line_naming(caught.value, "raw")


def test_another_record_type_is_a_mismatch(registry: SchemaRegistry, raw: AvroCodec) -> None:
    payload = AvroCodec("leadflow.LeadState", registry).encode(SAMPLES["leadflow.LeadState"])
    with pytest.raises(SchemaMismatchError) as caught:
        raw.decode(payload)
    assert "holds a leadflow.LeadState v1 record, expected leadflow.RawLead" in str(caught.value)
    assert_one_line_naming(caught.value, "raw")


def test_every_truncation_is_reported(raw: AvroCodec) -> None:
    payload = raw.encode(SAMPLES["leadflow.RawLead"])
    for cut in range(2, len(payload)):
        with pytest.raises(TruncatedPayloadError) as caught:
            raw.decode(payload[:cut])
        assert_one_line_naming(caught.value, "raw")


def test_trailing_bytes_are_a_mismatch(raw: AvroCodec) -> None:
    payload = raw.encode(SAMPLES["leadflow.RawLead"]) + b"\x00\x01"
    with pytest.raises(
        SchemaMismatchError, match=r"2 trailing bytes after the leadflow\.RawLead v2"
    ):
        raw.decode(payload)


def test_corrupt_body_is_a_mismatch_without_quoting_data(raw: AvroCodec) -> None:
    good = raw.encode({"campaign_id": "c", "lead_id": "L1", "event_time": T0})
    # first_name's union branch index (byte after the two strings) set to branch 3 (varint 6)
    index_at = HEADER_SIZE + 2 + 3
    bad_union = good[:index_at] + b"\x06" + good[index_at + 1 :]
    with pytest.raises(SchemaMismatchError, match=r"union branch index out of range"):
        raw.decode(bad_union)
    bad_utf8 = good[:HEADER_SIZE] + b"\x02\xff" + good[HEADER_SIZE + 2 :]
    with pytest.raises(SchemaMismatchError, match=r"invalid UTF-8") as caught:
        raw.decode(bad_utf8)
    assert_one_line_naming(caught.value, "raw")


def test_encode_mismatch_names_the_field_not_the_value(raw: AvroCodec) -> None:
    secret = "jane.doe@example.com"
    record = {**SAMPLES["leadflow.RawLead"], "source_line": secret}
    with pytest.raises(SchemaMismatchError) as caught:
        raw.encode(record)
    text = str(caught.value)
    assert "field source_line of leadflow.RawLead v2 expects null or long, got str" in text
    assert secret not in text
    assert_one_line_naming(caught.value, "raw")
    assert caught.value.__cause__ is not None


def test_encode_missing_required_field(raw: AvroCodec) -> None:
    with pytest.raises(
        SchemaMismatchError, match=r"field lead_id of .* expects string, got nothing"
    ):
        raw.encode({"campaign_id": "c", "event_time": T0})


def test_encode_nested_field_error(registry: SchemaRegistry) -> None:
    codec = AvroCodec("leadflow.DeadLetter", registry, subject="dead-letter")
    record = dict(SAMPLES["leadflow.DeadLetter"])
    record["history"] = [{**record["history"][0], "error_message": 5}]
    with pytest.raises(SchemaMismatchError, match=r"leadflow\.DeadLetterAttempt\.error_message"):
        codec.encode(record)


def test_encode_non_mapping(raw: AvroCodec) -> None:
    with pytest.raises(
        SchemaMismatchError, match=r"expected a mapping for leadflow\.RawLead v2, got list"
    ):
        raw.encode([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("full_name", "field", "value", "coerced", "message"),
    [
        ("leadflow.TouchDue", "priority", 9.7, 9, "expects int, got float"),
        ("leadflow.ScoredLead", "score", "87.5", 87.5, "expects double, got str"),
        ("leadflow.ScoredLead", "qualified", "no", True, "expects boolean, got str"),
        ("leadflow.ScoredLead", "reasons", "ab", ["a", "b"], "expects array, got str"),
    ],
)
def test_validate_option_refuses_what_fastavro_would_coerce(
    registry: SchemaRegistry, full_name: str, field: str, value: Any, coerced: Any, message: str
) -> None:
    record = {**SAMPLES[full_name], field: value}
    lax = AvroCodec(full_name, registry)
    assert lax.decode(lax.encode(record))[field] == coerced
    strict = AvroCodec(full_name, registry, validate=True)
    assert strict.decode(strict.encode(SAMPLES[full_name])) == SAMPLES[full_name]
    with pytest.raises(SchemaMismatchError) as caught:
        strict.encode(record)
    version = AvroCodec(full_name).schema.version
    assert f"field {field} of {full_name} v{version} {message}" in str(caught.value)


def test_writer_refusal_after_validation_passes_names_no_value(raw: AvroCodec) -> None:
    record = {**SAMPLES["leadflow.RawLead"], "first_name": "Ja\ud800ne"}  # a lone surrogate
    with pytest.raises(SchemaMismatchError) as caught:
        raw.encode(record)
    assert str(caught.value) == (
        "record does not match its schema (raw): cannot write leadflow.RawLead v2: "
        "UnicodeEncodeError"
    )


def test_unknown_record_name(registry: SchemaRegistry) -> None:
    with pytest.raises(SchemaLoadError, match=r"no schema named 'leadflow\.Nope'"):
        AvroCodec("leadflow.Nope", registry)


# --- decode_payload_any ---------------------------------------------------------------


def test_decode_payload_any_finds_the_record_type(registry: SchemaRegistry) -> None:
    for name, sample in SAMPLES.items():
        payload = AvroCodec(name, registry).encode(sample)
        assert decode_payload_any(payload, registry) == (name, sample)
    old = {
        k: v for k, v in SAMPLES["leadflow.RawLead"].items() if k not in {"source", "source_line"}
    }
    name, record = decode_payload_any(v1_payload(registry, old), registry)
    assert (name, record["source"]) == ("leadflow.RawLead", "unknown")


def test_decode_payload_any_errors(registry: SchemaRegistry) -> None:
    with pytest.raises(UnknownFingerprintError) as caught:
        decode_payload_any(MARKER + bytes(8), registry, subject="tail")
    assert_one_line_naming(caught.value, "tail")
    with pytest.raises(NotSingleObjectError):
        decode_payload_any(b"nope", registry)


# --- the Faust codec ----------------------------------------------------------------


@pytest.fixture(scope="module")
def faust_codec(registry: SchemaRegistry) -> FaustAvroCodec:
    return FaustAvroCodec("leadflow.RawLead", subject="raw", registry=registry)


def test_faust_registry_round_trip(faust_codec: FaustAvroCodec, raw: AvroCodec) -> None:
    """What a Faust topic does with value_serializer=FaustAvroCodec(...)."""
    serializers = Registry()
    payload = serializers.dumps_value(None, SAMPLES["leadflow.RawLead"], serializer=faust_codec)
    assert payload == raw.encode(SAMPLES["leadflow.RawLead"])
    assert (
        serializers.loads_value(None, payload, serializer=faust_codec)
        == SAMPLES["leadflow.RawLead"]
    )


def test_faust_record_values_are_encoded(faust_codec: FaustAvroCodec, raw: AvroCodec) -> None:
    class Lead(faust.Record):
        campaign_id: str
        lead_id: str
        event_time: datetime

    lead = Lead(campaign_id="c", lead_id="L1", event_time=T0)
    payload = Registry().dumps_value(None, lead, serializer=faust_codec)
    assert payload is not None
    assert raw.decode(payload)["lead_id"] == "L1"
    assert faust_codec.dumps(lead) == payload


def test_faust_bytes_values(faust_codec: FaustAvroCodec, raw: AvroCodec) -> None:
    payload = raw.encode(SAMPLES["leadflow.RawLead"])
    # Faust itself sends bytes values as they are ...
    assert Registry().dumps_value(None, payload, serializer=faust_codec) == payload
    # ... and bytes that reach the codec must already be this record type.
    assert faust_codec.dumps(bytearray(payload)) == payload
    with pytest.raises(NotSingleObjectError):
        faust_codec.dumps(b'{"json": 1}')
    with pytest.raises(SchemaMismatchError, match=r"cannot encode a int as leadflow\.RawLead"):
        faust_codec.dumps(5)


def test_faust_decode_error_keeps_our_error_as_cause(faust_codec: FaustAvroCodec) -> None:
    with pytest.raises(ValueDecodeError) as caught:
        Registry().loads_value(None, b"not avro", serializer=faust_codec)
    assert isinstance(caught.value.__cause__, NotSingleObjectError)


def test_faust_codec_survives_chaining(faust_codec: FaustAvroCodec) -> None:
    chained = faust_codec | faust_codecs.binary()
    assert isinstance(chained, FaustAvroCodec)
    assert chained.avro.subject == "raw"
    text = chained.dumps(SAMPLES["leadflow.RawLead"])
    assert chained.loads(text) == SAMPLES["leadflow.RawLead"]
    assert "leadflow.RawLead" in repr(chained)


# --- JSON ---------------------------------------------------------------------------


def test_json_round_trip_with_bytes_and_times(registry: SchemaRegistry) -> None:
    schema = registry.current("leadflow.DeadLetter")
    sample = SAMPLES["leadflow.DeadLetter"]
    line = record_to_json(sample)
    assert "\n" not in line
    data = json.loads(line)
    assert data["payload"] == "wwEA/yByYXcgYnl0ZXMgAA=="
    assert data["failed_at"] == "2024-05-02T14:30:00.000+00:00"
    assert data["history"][0]["failed_at"] == "2024-05-01T14:30:15.250+00:00"
    assert record_from_json(data, schema) == sample


def test_json_input_errors_name_the_field(registry: SchemaRegistry) -> None:
    schema = registry.current("leadflow.DeadLetter")
    data = json.loads(record_to_json(SAMPLES["leadflow.DeadLetter"]))
    with pytest.raises(
        SchemaMismatchError, match=r"field leadflow\.DeadLetter\.payload is not base64"
    ):
        record_from_json({**data, "payload": "not base64!"}, schema, subject="stdin")
    with pytest.raises(
        SchemaMismatchError, match=r"\(stdin\): field leadflow.DeadLetter.failed_at"
    ):
        record_from_json({**data, "failed_at": "yesterday"}, schema, subject="stdin")
