"""Example records built from a schema: one valid value for every field.

Used by ``leadflow smoke`` and by tests that round-trip every schema through
the broker. Fields with a default take a non-default value where one is easy
to make, so the round trip exercises real data, not just defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streams.schemas import SchemaVersion

__all__ = ["example_record"]

_NOW = datetime(2026, 11, 26, 15, 30, tzinfo=UTC)


def example_record(version: SchemaVersion, lead_id: str = "lead-000001") -> dict[str, Any]:
    """A record that matches ``version``'s schema."""
    return _record(version.definition, version.named_types, lead_id)


def _record(schema: Mapping[str, Any], named: Mapping[str, Any], lead_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in schema["fields"]:
        name = field["name"]
        out[name] = lead_id if name == "lead_id" else _value(field["type"], named, name, lead_id)
    return out


def _value(schema: Any, named: Mapping[str, Any], name: str, lead_id: str) -> Any:
    if isinstance(schema, list):  # a union: take the first non-null branch
        branches = [b for b in schema if b != "null"]
        return _value(branches[0], named, name, lead_id) if branches else None
    if isinstance(schema, str):
        if schema in named:
            return _value(named[schema], named, name, lead_id)
        return _primitive(schema, name)
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if logical == "timestamp-millis":
        return _NOW
    if kind == "record":
        return _record(schema, named, lead_id)
    if kind == "array":
        return [_value(schema["items"], named, name, lead_id)]
    if kind == "map":
        return {"source_column": _value(schema["values"], named, name, lead_id)}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "fixed":
        return b"\x00" * int(schema["size"])
    return _value(kind, named, name, lead_id)


def _primitive(kind: str, name: str) -> Any:
    samples: dict[str, Any] = {
        "string": f"example-{name}",
        "int": 1,
        "long": 42,
        "float": 0.5,
        "double": 72.5,
        "boolean": True,
        "bytes": b"\xc3\x01example",
        "null": None,
    }
    return samples[kind]
