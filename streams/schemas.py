"""The Avro schemas in ``schemas/``: load, fingerprint, index and check them.

Each ``<snake_name>.v<N>.avsc`` file holds one version of one record type
(``raw_lead.v2.avsc`` is ``leadflow.RawLead`` version 2; the file also says
``"version": 2``). :class:`SchemaRegistry` loads them all, computes each
version's CRC-64-AVRO fingerprint of its Parsing Canonical Form (the 8 bytes
that follow ``C3 01`` in single-object encoding, little-endian as in the Java
reference) and indexes the versions by full name and by fingerprint.

:meth:`SchemaRegistry.check_compatibility` proves, by Avro's schema
resolution rules, that the current version of each record reads every older
one; :meth:`SchemaRegistry.lint` checks the house rules of
``schemas/README.md``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import validate

from streams.errors import SchemaLoadError, UnknownFingerprintError
from streams.settings import get_settings

__all__ = [
    "NAMESPACE",
    "PRIMITIVES",
    "SchemaProblem",
    "SchemaRegistry",
    "SchemaVersion",
    "crc64_avro",
    "default_registry",
    "load_schema_file",
    "resolve_named",
    "type_kind",
]

#: Namespace of every leadflow record.
NAMESPACE = "leadflow"

#: Avro's primitive type names.
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})

_FILE_NAME = re.compile(r"^(?P<snake>[a-z][a-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")

#: (writer type, reader type) pairs that Avro's schema resolution promotes.
_PROMOTIONS = frozenset(
    {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
)


def crc64_avro(canonical_form: str) -> bytes:
    """The CRC-64-AVRO fingerprint of a Parsing Canonical Form, as 8 little-endian bytes."""
    # fastavro returns the hex of the little-endian bytes, as Java's
    # SchemaNormalization.fingerprint("CRC-64-AVRO", ...) does.
    return bytes.fromhex(_fastavro_fingerprint(canonical_form, "CRC-64-AVRO"))


@dataclass(frozen=True, eq=False)
class SchemaVersion:
    """One version of one record type, as loaded from its ``.avsc`` file."""

    full_name: str
    version: int
    path: Path
    #: The schema as written in the file.
    definition: Mapping[str, Any]
    #: The schema as parsed by ``fastavro.parse_schema``, ready for reading and writing.
    parsed: dict[str, Any]
    #: Avro Parsing Canonical Form (what the fingerprint is taken of).
    canonical_form: str
    #: CRC-64-AVRO of the canonical form, 8 bytes little-endian.
    fingerprint: bytes

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as 16 hex digits, in wire (little-endian) byte order."""
        return self.fingerprint.hex()

    @property
    def label(self) -> str:
        """``leadflow.RawLead v2``: how messages name this version."""
        return f"{self.full_name} v{self.version}"

    @property
    def named_types(self) -> Mapping[str, Any]:
        """Every named type of this schema by full name (for :func:`resolve_named`)."""
        named: Mapping[str, Any] = self.parsed["__named_schemas"]
        return named


@dataclass(frozen=True)
class SchemaProblem:
    """One thing ``leadflow schemas check`` reports."""

    subject: str
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


def load_schema_file(path: Path) -> SchemaVersion:
    """Load and parse one ``.avsc`` file; raise :class:`SchemaLoadError` naming it."""
    subject = str(path)
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise SchemaLoadError(
            "file name must be <snake_name>.v<N>.avsc, e.g. raw_lead.v1.avsc", subject=subject
        )
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SchemaLoadError(f"cannot read: {exc.strerror or exc}", subject=subject) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaLoadError(f"not valid JSON: {exc}", subject=subject) from exc
    if not isinstance(definition, dict) or definition.get("type") != "record":
        raise SchemaLoadError("top level must be a record schema", subject=subject)
    try:
        parsed = cast("dict[str, Any]", parse_schema(definition, named_schemas={}))
        canonical_form = to_parsing_canonical_form(parsed)
    except Exception as exc:  # fastavro raises several unrelated classes
        raise SchemaLoadError(f"invalid Avro schema: {_one_line(exc)}", subject=subject) from exc

    full_name = str(parsed["name"])
    namespace, _, name = full_name.rpartition(".")
    if namespace != NAMESPACE:
        raise SchemaLoadError(f"{full_name} must be in namespace {NAMESPACE!r}", subject=subject)
    if _snake_case(name) != match["snake"]:
        raise SchemaLoadError(
            f"file name says {match['snake']!r} but the schema is {full_name} "
            f"(expected {_snake_case(name)}.v{match['version']}.avsc)",
            subject=subject,
        )
    version = int(match["version"])
    if definition.get("version") != version:
        raise SchemaLoadError(
            f'file name says v{version} but the schema has "version": '
            f"{json.dumps(definition.get('version'))}",
            subject=subject,
        )
    return SchemaVersion(
        full_name=full_name,
        version=version,
        path=path,
        definition=definition,
        parsed=parsed,
        canonical_form=canonical_form,
        fingerprint=crc64_avro(canonical_form),
    )


class SchemaRegistry:
    """Every version of every record type, by full name and by fingerprint.

    Build it with :meth:`from_dir` (or :func:`default_registry`); it does not
    change after that, so codecs may cache what they look up.
    """

    def __init__(self, versions: Iterable[SchemaVersion], *, source: str = "<memory>") -> None:
        self.source = source
        self._by_name: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for item in versions:
            same = self._by_fingerprint.get(item.fingerprint)
            if same is not None:
                raise SchemaLoadError(
                    f"same canonical form (fingerprint {item.fingerprint_hex}) as "
                    f"{same.path.name}; a change to docs, defaults or aliases alone is "
                    "not a new version",
                    subject=str(item.path),
                )
            listed = self._by_name.setdefault(item.full_name, [])
            if any(v.version == item.version for v in listed):  # pragma: no cover - file names
                raise SchemaLoadError(f"duplicate {item.label}", subject=str(item.path))
            listed.append(item)
            self._by_fingerprint[item.fingerprint] = item
        for listed in self._by_name.values():
            listed.sort(key=lambda v: v.version)

    @classmethod
    def from_dir(cls, path: Path | str) -> SchemaRegistry:
        """Load every ``*.avsc`` file in folder ``path``."""
        folder = Path(path)
        if not folder.is_dir():
            raise SchemaLoadError("schema folder does not exist", subject=str(folder))
        files = sorted(folder.glob("*.avsc"))
        if not files:
            raise SchemaLoadError("no .avsc files in the schema folder", subject=str(folder))
        return cls((load_schema_file(f) for f in files), source=str(folder))

    def __repr__(self) -> str:
        return f"<SchemaRegistry {self.source} ({len(self._by_fingerprint)} versions)>"

    def __iter__(self) -> Iterator[SchemaVersion]:
        """Every version, ordered by full name then version."""
        for name in self.names():
            yield from self._by_name[name]

    def __len__(self) -> int:
        return len(self._by_fingerprint)

    def names(self) -> tuple[str, ...]:
        """Full names of all record types, sorted."""
        return tuple(sorted(self._by_name))

    def versions(self, full_name: str) -> tuple[SchemaVersion, ...]:
        """All versions of ``full_name``, oldest first."""
        return tuple(self._listed(full_name))

    def current(self, full_name: str) -> SchemaVersion:
        """The highest version of ``full_name``: the one producers write."""
        return self._listed(full_name)[-1]

    def find(self, fingerprint: bytes) -> SchemaVersion | None:
        """The version with this fingerprint, or None."""
        return self._by_fingerprint.get(bytes(fingerprint))

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion:
        """The version with this fingerprint; :class:`UnknownFingerprintError` if none."""
        found = self.find(fingerprint)
        if found is None:
            raise UnknownFingerprintError(
                f"{bytes(fingerprint).hex()} matches no schema", subject=self.source
            )
        return found

    def _listed(self, full_name: str) -> list[SchemaVersion]:
        listed = self._by_name.get(full_name)
        if listed is None:
            raise SchemaLoadError(
                f"no schema named {full_name!r} (known: {', '.join(self.names())})",
                subject=self.source,
            )
        return listed

    # --- checks ------------------------------------------------------------

    def check_compatibility(self) -> list[SchemaProblem]:
        """Problems that stop the current version of a record reading an older one.

        Applies Avro's schema resolution rules (matching names, promotions,
        unions, defaults for fields the writer lacks) with the current
        version as reader and each older version as writer. Empty means every
        record ever written with these files can still be read.
        """
        problems: list[SchemaProblem] = []
        for name in self.names():
            reader = self.current(name)
            for writer in self.versions(name)[:-1]:
                checker = _ResolutionCheck(reader.named_types, writer.named_types)
                problems.extend(
                    SchemaProblem(f"{name} v{writer.version} -> v{reader.version}", message)
                    for message in checker.problems(reader.parsed, writer.parsed, name)
                )
        return problems

    def lint(self) -> list[SchemaProblem]:
        """House-rule problems: missing docs, bad union defaults, version gaps, removals."""
        problems = []
        for name in self.names():
            listed = self.versions(name)
            numbers = [v.version for v in listed]
            if numbers != list(range(1, len(numbers) + 1)):
                problems.append(
                    SchemaProblem(name, f"versions {numbers} have a gap; old files are kept")
                )
            current = listed[-1]
            current_names = _field_names_and_aliases(current.definition)
            for old in listed[:-1]:
                gone = _field_names_and_aliases(old.definition, aliases=False) - current_names
                problems.extend(
                    SchemaProblem(
                        current.path.name,
                        f"field {field!r} of v{old.version} was removed or renamed "
                        "without an alias",
                    )
                    for field in sorted(gone)
                )
            for item in listed:
                problems.extend(
                    SchemaProblem(item.path.name, message)
                    for message in _lint_record(item.definition, item.full_name)
                )
        return problems


@functools.lru_cache(maxsize=4)
def _registry_at(folder: Path) -> SchemaRegistry:
    return SchemaRegistry.from_dir(folder)


def default_registry() -> SchemaRegistry:
    """The registry of ``Settings.schemas_dir``, loaded once per folder."""
    return _registry_at(get_settings().schemas_dir.expanduser().resolve())


# --- walking parsed schemas ------------------------------------------------------


def resolve_named(schema: Any, named_types: Mapping[str, Any]) -> Any:
    """``schema``, with a reference to a named type replaced by its definition."""
    if isinstance(schema, str) and schema not in PRIMITIVES:
        return named_types[schema]
    if isinstance(schema, dict) and isinstance(schema.get("type"), str):
        inner = schema["type"]
        if inner not in PRIMITIVES and inner not in _COMPLEX:
            return named_types[inner]
    return schema


_COMPLEX = frozenset({"record", "enum", "array", "map", "fixed", "error"})


def type_kind(schema: Any) -> str:
    """``union``, ``record``, ``array``, ``map``, ``enum``, ``fixed`` or a primitive name.

    Logical types report their underlying type (``long`` for timestamp-millis).
    ``schema`` must already be resolved with :func:`resolve_named`.
    """
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    kind = schema["type"]
    if isinstance(kind, str):
        return "record" if kind == "error" else kind
    return type_kind(kind)


class _ResolutionCheck:
    """Avro schema resolution, statically: can ``reader`` read what ``writer`` wrote?"""

    def __init__(self, reader_named: Mapping[str, Any], writer_named: Mapping[str, Any]) -> None:
        self._reader_named = reader_named
        self._writer_named = writer_named
        self._seen: set[tuple[int, int]] = set()

    def problems(self, reader: Any, writer: Any, where: str) -> list[str]:
        reader = resolve_named(reader, self._reader_named)
        writer = resolve_named(writer, self._writer_named)
        rkind, wkind = type_kind(reader), type_kind(writer)
        if wkind == "union":
            return [p for branch in writer for p in self.problems(reader, branch, where)]
        if rkind == "union":
            if any(not self.problems(branch, writer, where) for branch in reader):
                return []
            return [f"{where}: written as {wkind}, which no branch of the reader's union reads"]
        if rkind != wkind:
            if (wkind, rkind) in _PROMOTIONS:
                return []
            return [f"{where}: written as {wkind}, cannot be read as {rkind}"]
        if rkind == "record":
            return self._records(reader, writer, where)
        if rkind == "array":
            return self.problems(reader["items"], writer["items"], f"{where}[]")
        if rkind == "map":
            return self.problems(reader["values"], writer["values"], f"{where}{{}}")
        if rkind == "enum":
            missing = set(writer["symbols"]) - set(reader["symbols"])
            if missing and "default" not in reader:
                return [f"{where}: reader enum lacks symbols {sorted(missing)} and has no default"]
        if rkind in {"enum", "fixed"} and not _same_name(reader, writer):
            return [
                f"{where}: named {writer['name']} by the writer, {reader['name']} by the reader"
            ]
        if rkind == "fixed" and reader["size"] != writer["size"]:
            return [f"{where}: fixed size {writer['size']} read as {reader['size']}"]
        return []

    def _records(
        self, reader: Mapping[str, Any], writer: Mapping[str, Any], where: str
    ) -> list[str]:
        pair = (id(reader), id(writer))
        if pair in self._seen:  # a recursive type: already being checked
            return []
        self._seen.add(pair)
        if not _same_name(reader, writer):
            return [f"{where}: record {writer['name']} cannot be read as {reader['name']}"]
        written = {field["name"]: field for field in writer["fields"]}
        problems = []
        for field in reader["fields"]:
            name = field["name"]
            source = written.get(name) or next(
                (written[a] for a in field.get("aliases", ()) if a in written), None
            )
            if source is not None:
                problems.extend(self.problems(field["type"], source["type"], f"{where}.{name}"))
            elif "default" not in field:
                problems.append(f"{where}.{name}: not written by the writer and has no default")
        return problems


def _same_name(reader: Mapping[str, Any], writer: Mapping[str, Any]) -> bool:
    wanted = _short(writer["name"])
    return wanted == _short(reader["name"]) or wanted in {
        _short(a) for a in reader.get("aliases", ())
    }


def _short(name: str) -> str:
    return name.rpartition(".")[2]


# --- lint helpers (on the definitions as written) --------------------------------


def _lint_record(record: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    if not record.get("doc"):
        problems.append(f"record {where} has no doc")
    for field in record.get("fields", ()):
        path = f"{where}.{field.get('name')}"
        if not field.get("doc"):
            problems.append(f"field {path} has no doc")
        problems.extend(_lint_union_default(field, path))
        for nested in _nested_records(field.get("type")):
            problems.extend(_lint_record(nested, path))
    return problems


def _lint_union_default(field: Mapping[str, Any], path: str) -> list[str]:
    branches = field.get("type")
    if not isinstance(branches, list) or "default" not in field or not branches:
        return []
    first = branches[0]
    if isinstance(first, str) and first not in PRIMITIVES:
        return []  # a named type: fastavro already checked the default against the union
    if validate(field["default"], parse_schema(first), raise_errors=False):
        return []
    return [f"field {path}: a union's default must match its first branch ({json.dumps(first)})"]


def _nested_records(schema: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(schema, list):
        for branch in schema:
            yield from _nested_records(branch)
    elif isinstance(schema, dict):
        if schema.get("type") in {"record", "error"}:
            yield schema
        else:
            yield from _nested_records(schema.get("items") or schema.get("values"))


def _field_names_and_aliases(record: Mapping[str, Any], *, aliases: bool = True) -> set[str]:
    names = set()
    for field in record.get("fields", ()):
        names.add(field["name"])
        if aliases:
            names.update(field.get("aliases", ()))
    return names


def _snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
