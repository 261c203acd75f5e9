"""The one Avro codec of leadflow: single-object encoding of one record type.

Every topic value is ``C3 01`` + the writer schema's 8-byte CRC-64-AVRO
fingerprint + the Avro binary body (the Avro spec's *single-object
encoding*). No schema registry service is needed: the fingerprint names a
file in ``schemas/``. :class:`AvroCodec` always writes the current version
of its record and reads every version, resolving older ones to the current
schema (new fields get their defaults).

:class:`FaustAvroCodec` wraps it as a Faust codec, one instance per topic::

    raw = app.topic("raw", value_serializer=FaustAvroCodec("leadflow.RawLead", subject="raw"))

Timestamps (``timestamp-millis``) decode to aware UTC :class:`~datetime.datetime`
objects; encode takes a datetime (naive means UTC) or epoch milliseconds.

Every failure raises a :class:`~streams.errors.CodecError` subclass whose
one-line message names the subject (the topic) and never holds field values.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from io import BytesIO
from typing import Any, NamedTuple, cast

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.validation import ValidationError, validate
from faust.serializers.codecs import Codec
from faust.types.codecs import CodecT

from streams.errors import (
    NotSingleObjectError,
    SchemaMismatchError,
    TruncatedPayloadError,
    UnknownFingerprintError,
)
from streams.schemas import (
    SchemaRegistry,
    SchemaVersion,
    default_registry,
    resolve_named,
    type_kind,
)

__all__ = [
    "HEADER_SIZE",
    "MARKER",
    "AvroCodec",
    "DecodedPayload",
    "FaustAvroCodec",
    "decode_payload_any",
    "record_from_json",
    "record_to_json",
]

#: The two bytes every single-object payload starts with.
MARKER = b"\xc3\x01"
#: Marker plus fingerprint: where the Avro body starts.
HEADER_SIZE = 10

#: How many leading bytes of a non-Avro payload an error message shows (kept
#: short: the bytes may be personal data).
_SHOWN_BYTES = 4


class AvroCodec:
    """Encode and decode one record type (``leadflow.RawLead``) for one subject.

    ``subject`` (usually the topic) is named in every error message; it
    defaults to the record's full name.

    ``validate=True`` checks every record against the schema before writing
    it (about 1.7x the cost of an encode). Without it, fastavro's writer
    coerces some wrong values instead of refusing them: a float in an int or
    long field is truncated, a numeric string in a float or double field is
    parsed, a boolean field takes any value's truth, and a string in an
    array field is split into characters. Use it where records come from
    outside input; everything else that does not fit raises
    :class:`SchemaMismatchError` either way.
    """

    def __init__(
        self,
        full_name: str,
        registry: SchemaRegistry | None = None,
        subject: str | None = None,
        *,
        validate: bool = False,
    ) -> None:
        self.registry = registry if registry is not None else default_registry()
        self.full_name = full_name
        self.subject = subject or full_name
        #: The version this codec writes and reads into.
        self.schema: SchemaVersion = self.registry.current(full_name)
        #: ``C3 01`` + the current version's fingerprint.
        self.header = MARKER + self.schema.fingerprint
        self._parsed = self.schema.parsed
        self._validate = validate
        self._versions = {v.fingerprint: v for v in self.registry.versions(full_name)}

    def __repr__(self) -> str:
        return f"AvroCodec({self.schema.label}, subject={self.subject!r})"

    # --- encode ------------------------------------------------------------

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """``record`` as a single-object payload of the current version."""
        out = BytesIO()
        out.write(self.header)
        try:
            # raise_errors=False is ~15x faster; the error path finds the details.
            if self._validate and not validate(record, self._parsed, raise_errors=False):
                raise _InvalidRecordError(self.schema.label)
            schemaless_writer(out, self._parsed, record)
        except Exception as exc:  # fastavro raises TypeError, ValueError, OverflowError, ...
            raise self._encode_error(record, exc) from exc
        return out.getvalue()

    def _encode_error(self, record: Any, exc: Exception) -> SchemaMismatchError:
        label = self.schema.label
        if not isinstance(record, Mapping):
            detail = f"expected a mapping for {label}, got {type(record).__name__}"
        else:
            try:
                problem = _first_invalid(record, self.schema)
            except Exception:  # validation itself choked: fall back to a general message
                problem = None
            if problem is not None:
                field, expected, got = problem
                field = field.removeprefix(f"{self.full_name}.")
                detail = f"field {field} of {label} expects {expected}, got {got}"
            else:  # valid by fastavro.validation, refused by its writer
                where = _fastavro_field(exc)
                on = f" (field {where})" if where else ""
                detail = f"cannot write {label}{on}: {type(exc).__name__}"
        return SchemaMismatchError(detail, subject=self.subject)

    # --- decode ------------------------------------------------------------

    def decode(self, payload: bytes) -> dict[str, Any]:
        """The record in ``payload``, resolved to the current version."""
        if payload[:HEADER_SIZE] == self.header:  # the common case: written by this version
            writer, reader = self._parsed, None
            label = self.schema.label
        else:
            version = self.writer_of(payload)
            writer, reader, label = version.parsed, self._parsed, version.label
        body = BytesIO(payload)
        body.seek(HEADER_SIZE)
        try:
            record = cast("dict[str, Any]", schemaless_reader(body, writer, reader))
        except Exception as exc:  # EOFError, IndexError, UnicodeDecodeError, OverflowError, ...
            # Reading past the end shows up as EOFError or, from fastavro's
            # varint reader, IndexError; either way the body was used up.
            if isinstance(exc, EOFError) or body.tell() >= len(payload):
                raise TruncatedPayloadError(
                    f"{len(payload)}-byte payload ends inside its {label} record",
                    subject=self.subject,
                ) from exc
            raise SchemaMismatchError(
                f"body is not a valid {label} record: {_describe(exc)}", subject=self.subject
            ) from exc
        extra = len(payload) - body.tell()
        if extra:
            raise SchemaMismatchError(
                f"{extra} trailing bytes after the {label} record", subject=self.subject
            )
        return record

    def writer_of(self, payload: bytes) -> SchemaVersion:
        """The version of this codec's record that wrote ``payload`` (header checks only)."""
        fingerprint = _fingerprint_of(payload, self.subject)
        version = self._versions.get(fingerprint)
        if version is not None:
            return version
        other = self.registry.find(fingerprint)
        if other is not None:
            raise SchemaMismatchError(
                f"payload holds a {other.label} record, expected {self.full_name}",
                subject=self.subject,
            )
        raise UnknownFingerprintError(
            f"{fingerprint.hex()} matches no schema in {self.registry.source} "
            f"(expected a {self.full_name} version)",
            subject=self.subject,
        )


class _InvalidRecordError(ValueError):
    """fastavro.validation refused a record (``validate=True``)."""


class DecodedPayload(NamedTuple):
    """What :func:`decode_payload_any` returns."""

    full_name: str
    record: dict[str, Any]


def decode_payload_any(
    payload: bytes, registry: SchemaRegistry | None = None, *, subject: str | None = None
) -> DecodedPayload:
    """Decode a single-object payload of any record type in ``registry``.

    The record is resolved to the current version of its type.
    """
    registry = registry if registry is not None else default_registry()
    fingerprint = _fingerprint_of(payload, subject or registry.source)
    version = registry.find(fingerprint)
    if version is None:
        raise UnknownFingerprintError(
            f"{fingerprint.hex()} matches no schema in {registry.source}",
            subject=subject or registry.source,
        )
    codec = _codec_for(registry, version.full_name, subject)
    return DecodedPayload(version.full_name, codec.decode(payload))


@functools.lru_cache(maxsize=64)
def _codec_for(registry: SchemaRegistry, full_name: str, subject: str | None) -> AvroCodec:
    return AvroCodec(full_name, registry, subject)


class FaustAvroCodec(Codec):
    """The Faust codec for one record type; use one instance per topic.

    ``FaustAvroCodec("leadflow.RawLead", subject="raw")`` as a topic's or
    table's ``value_serializer`` (leave ``value_type`` unset). It encodes
    mappings (and Faust ``Record`` objects, through their ``asdict()``) and
    decodes to plain dicts. Faust hands ``bytes`` values straight to Kafka
    without calling a codec; if bytes do reach this codec they must already
    be a payload of this record type and pass through unchanged.

    Faust turns a decode error into ``ValueDecodeError`` (the
    :class:`~streams.errors.CodecError` is its ``__cause__``), logs it and
    commits past the message; to dead-letter bad payloads instead, read the
    topic as raw bytes and call :class:`AvroCodec` yourself.
    """

    def __init__(
        self,
        full_name: str,
        *,
        subject: str | None = None,
        registry: SchemaRegistry | None = None,
        children: tuple[CodecT, ...] | None = None,
    ) -> None:
        # Codec.clone() rebuilds the codec from these keyword arguments.
        super().__init__(children, full_name=full_name, subject=subject, registry=registry)
        self.avro = AvroCodec(full_name, registry, subject)

    def _dumps(self, s: Any) -> bytes:
        if isinstance(s, Mapping):
            return self.avro.encode(s)
        if isinstance(s, bytes | bytearray | memoryview):
            payload = bytes(s)
            self.avro.writer_of(payload)
            return payload
        asdict = getattr(s, "asdict", None)  # a faust.Record
        if callable(asdict):
            return self.avro.encode(asdict())
        raise SchemaMismatchError(
            f"cannot encode a {type(s).__name__} as {self.avro.full_name}",
            subject=self.avro.subject,
        )

    def _loads(self, s: bytes) -> Any:
        return self.avro.decode(s)


# --- JSON (for the CLI and tools) --------------------------------------------------


def record_to_json(record: Mapping[str, Any]) -> str:
    """One JSON line: bytes as standard base64, times as ISO-8601 UTC with milliseconds."""
    return json.dumps(record, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def record_from_json(
    data: Mapping[str, Any], schema: SchemaVersion, *, subject: str | None = None
) -> dict[str, Any]:
    """The inverse of :func:`record_to_json` for ``schema``'s record.

    Strings in ``bytes`` fields are read as base64 and strings in
    ``timestamp-millis`` fields as ISO-8601 (naive means UTC); other values
    pass through for the codec to check.
    """
    convert = _JsonReader(schema.named_types, subject or schema.full_name)
    return dict(convert(data, schema.parsed, schema.full_name))


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="milliseconds")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _JsonReader:
    """Turns JSON values into what fastavro writes, guided by the schema."""

    def __init__(self, named: Mapping[str, Any], subject: str) -> None:
        self._named = named
        self._subject = subject

    def __call__(self, value: Any, schema: Any, where: str) -> Any:
        schema = resolve_named(schema, self._named)
        kind = type_kind(schema)
        if value is None:
            return None
        if kind == "union":
            branches = [b for b in schema if b != "null"]
            return self(value, branches[0], where) if len(branches) == 1 else value
        if kind == "record" and isinstance(value, Mapping):
            fields = {f["name"]: f["type"] for f in schema["fields"]}
            return {
                k: self(v, fields[k], f"{where}.{k}") if k in fields else v
                for k, v in value.items()
            }
        if kind == "array" and isinstance(value, list):
            return [self(v, schema["items"], f"{where}[]") for v in value]
        if kind == "map" and isinstance(value, Mapping):
            return {k: self(v, schema["values"], f"{where}{{}}") for k, v in value.items()}
        if isinstance(value, str):
            return self._from_text(value, schema, kind, where)
        return value

    def _from_text(self, value: str, schema: Any, kind: str, where: str) -> Any:
        if kind in {"bytes", "fixed"}:
            try:
                return base64.b64decode(value, validate=True)
            except binascii.Error as exc:
                raise SchemaMismatchError(
                    f"field {where} is not base64", subject=self._subject
                ) from exc
        if isinstance(schema, dict) and schema.get("logicalType") == "timestamp-millis":
            try:
                moment = datetime.fromisoformat(value)
            except ValueError as exc:
                raise SchemaMismatchError(
                    f"field {where} is not an ISO-8601 time", subject=self._subject
                ) from exc
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return value


# --- helpers ---------------------------------------------------------------------


def _fingerprint_of(payload: Any, subject: str) -> bytes:
    """The 8 fingerprint bytes of a single-object payload, or the typed error."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise NotSingleObjectError(f"expected bytes, got {type(payload).__name__}", subject=subject)
    if payload[:2] != MARKER:
        raise NotSingleObjectError(_describe_start(bytes(payload[:_SHOWN_BYTES])), subject=subject)
    if len(payload) < HEADER_SIZE:
        raise TruncatedPayloadError(
            f"{len(payload)}-byte payload ends inside the {HEADER_SIZE}-byte header",
            subject=subject,
        )
    return bytes(payload[2:HEADER_SIZE])


def _describe_start(start: bytes) -> str:
    if not start:
        return "payload is empty"
    text = f"starts with {start.hex(' ')}, expected c3 01"
    if start[:1] == b"\x00":
        return text + " (Confluent wire format? that needs a Schema Registry)"
    if start[:1] in (b"{", b"["):
        return text + " (looks like JSON)"
    return text


def _first_invalid(record: Mapping[str, Any], schema: SchemaVersion) -> tuple[str, str, str] | None:
    """(field, expected type, Python type given) of the first invalid field, if any."""
    try:
        validate(record, schema.parsed, raise_errors=True)
    except ValidationError as exc:
        error = exc.errors[0]
        path = str(error.field)
        # fastavro reports one branch of a union; show the field's declared type.
        owner, _, name = path.rpartition(".")
        declared = next(
            (
                f["type"]
                for f in schema.named_types.get(owner, {}).get("fields", ())
                if f["name"] == name
            ),
            error.schema,
        )
        given = "nothing" if error.datum is None else type(error.datum).__name__
        return path, _describe_schema(declared), given
    return None


def _describe_schema(schema: Any) -> str:
    if isinstance(schema, list):
        return " or ".join(_describe_schema(branch) for branch in schema)
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        return str(logical or schema.get("name") or schema.get("type"))
    return str(schema)


_ON_FIELD = re.compile(r" on field (\S+)")


def _fastavro_field(exc: Exception) -> str | None:
    """The innermost field fastavro names in its message (``... on field x``), if any."""
    found = _ON_FIELD.findall(str(exc))
    return found[0] if found else None


def _describe(exc: Exception) -> str:
    """What went wrong reading a body, without quoting the data."""
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 ({exc.reason})"
    if isinstance(exc, SchemaResolutionError):  # names schema types only
        return _one_line(str(exc))
    if isinstance(exc, IndexError):
        return "union branch index out of range"
    return type(exc).__name__


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."
