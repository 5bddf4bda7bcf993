"""Avro schema compatibility, following the Avro specification's schema resolution rules.

Pure functions, no I/O.  A schema is parsed into a small graph of types
(:func:`parse_avro`); named types are resolved to shared nodes, so recursive
schemas are cyclic graphs.  :func:`reader_writer_incompatibilities` answers
"can data written with ``writer`` be read with ``reader``?" and lists every
reason it cannot.  :func:`check_compatibility` applies a Confluent
compatibility level (``BACKWARD`` = the new schema reads data written with
the previous one, ``FORWARD`` = the previous schema reads data written with
the new one, ``FULL`` = both; ``*_TRANSITIVE`` = against every previous
version instead of only the latest).

Resolution rules implemented (reader ← writer):

* same primitive type; promotions int → long/float/double, long → float/double,
  float → double, string ↔ bytes; logical types follow their underlying type;
* records: named alike (unqualified name, or a reader alias); every reader
  field is found in the writer by name or by one of the reader field's
  aliases, else it needs a default; writer-only fields are skipped;
* enums: named alike; every writer symbol is a reader symbol unless the
  reader enum declares a default;
* fixed: named alike and of the same size;
* arrays / maps: items / values resolve;
* unions: a writer union needs every branch readable; a reader union needs
  some branch that reads the writer type.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})

#: reader type -> writer types it can read besides itself (Avro "promotion")
PROMOTIONS: dict[str, frozenset[str]] = {
    "long": frozenset({"int"}),
    "float": frozenset({"int", "long"}),
    "double": frozenset({"int", "long", "float"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


class CompatibilityLevel(StrEnum):
    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        """The new schema must read data written with previous schemas."""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """Previous schemas must read data written with the new schema."""
        return self.value.startswith(("FORWARD", "FULL"))


DEFAULT_LEVEL = CompatibilityLevel.BACKWARD


def parse_level(value: object) -> CompatibilityLevel:
    """A compatibility level from its (case-insensitive) name; ``ValueError`` if unknown."""
    if not isinstance(value, str):
        raise ValueError(f"compatibility level must be a string, not {type(value).__name__}")
    try:
        return CompatibilityLevel(value.strip().upper())
    except ValueError:
        allowed = ", ".join(level.value for level in CompatibilityLevel)
        raise ValueError(f"invalid compatibility level {value!r}; allowed: {allowed}") from None


class AvroSchemaError(ValueError):
    """The schema is not a well-formed Avro schema."""


# --------------------------------------------------------------------------- schema graph


@dataclass(eq=False)
class AvroType:
    """Base of the parsed type graph (identity-compared: nodes of recursive schemas are shared)."""

    @property
    def kind(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind


@dataclass(eq=False)
class Primitive(AvroType):
    type_name: str
    logical_type: str | None = None

    @property
    def kind(self) -> str:
        return self.type_name

    def describe(self) -> str:
        return f"{self.type_name} ({self.logical_type})" if self.logical_type else self.type_name


@dataclass(eq=False)
class Named(AvroType):
    fullname: str
    aliases: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        """Unqualified name."""
        return self.fullname.rpartition(".")[2]

    def describe(self) -> str:
        return f"{self.kind} {self.fullname}"


@dataclass(eq=False)
class Field:
    name: str
    type: AvroType
    aliases: frozenset[str] = frozenset()
    has_default: bool = False
    position: int = 0


@dataclass(eq=False)
class Record(Named):
    fields: list[Field] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "record"

    def field_named(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None


@dataclass(eq=False)
class Enum(Named):
    symbols: tuple[str, ...] = ()
    default: str | None = None

    @property
    def kind(self) -> str:
        return "enum"


@dataclass(eq=False)
class Fixed(Named):
    size: int = 0

    @property
    def kind(self) -> str:
        return "fixed"


@dataclass(eq=False)
class Array(AvroType):
    items: AvroType

    @property
    def kind(self) -> str:
        return "array"


@dataclass(eq=False)
class Map(AvroType):
    values: AvroType

    @property
    def kind(self) -> str:
        return "map"


@dataclass(eq=False)
class Union(AvroType):
    branches: list[AvroType]

    @property
    def kind(self) -> str:
        return "union"

    def describe(self) -> str:
        return "union [" + ", ".join(b.describe() for b in self.branches) + "]"


def _fullname(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


class _Parser:
    def __init__(self) -> None:
        self.named: dict[str, Named] = {}

    def parse(self, obj: Any, namespace: str | None) -> AvroType:
        if isinstance(obj, str):
            return self._reference(obj, namespace)
        if isinstance(obj, list):
            return self._union(obj, namespace)
        if not isinstance(obj, dict):
            raise AvroSchemaError(f"a schema is a JSON string, object or array, not {json.dumps(obj)}")
        type_ = obj.get("type")
        if isinstance(type_, dict | list):
            return self.parse(type_, namespace)
        if not isinstance(type_, str):
            raise AvroSchemaError(f"schema object without a string 'type': {json.dumps(obj)[:200]}")
        if type_ in PRIMITIVES:
            logical = obj.get("logicalType")
            return Primitive(type_, logical if isinstance(logical, str) else None)
        if type_ in ("record", "error"):
            return self._record(obj, namespace)
        if type_ == "enum":
            return self._enum(obj, namespace)
        if type_ == "fixed":
            return self._fixed(obj, namespace)
        if type_ == "array":
            if "items" not in obj:
                raise AvroSchemaError("array schema without 'items'")
            return Array(self.parse(obj["items"], namespace))
        if type_ == "map":
            if "values" not in obj:
                raise AvroSchemaError("map schema without 'values'")
            return Map(self.parse(obj["values"], namespace))
        return self._reference(type_, namespace)

    def _reference(self, name: str, namespace: str | None) -> AvroType:
        if name in PRIMITIVES:
            return Primitive(name)
        for candidate in (_fullname(name, namespace), name):
            found = self.named.get(candidate)
            if found is not None:
                return found
        raise AvroSchemaError(f"unknown type {name!r}")

    def _union(self, branches: list[Any], namespace: str | None) -> Union:
        parsed = [self.parse(b, namespace) for b in branches]
        seen: set[str] = set()
        for b in parsed:
            if isinstance(b, Union):
                raise AvroSchemaError("a union may not immediately contain another union")
            key = b.fullname if isinstance(b, Named) else b.kind
            if key in seen:
                raise AvroSchemaError(f"union contains {key!r} twice")
            seen.add(key)
        return Union(parsed)

    def _names(self, obj: dict[str, Any], namespace: str | None) -> tuple[str, str | None, frozenset[str]]:
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise AvroSchemaError(f"{obj.get('type')} schema without a 'name'")
        ns = obj.get("namespace")
        ns = ns if isinstance(ns, str) else namespace
        fullname = _fullname(name, ns)
        if fullname in self.named:
            raise AvroSchemaError(f"type {fullname!r} is defined twice")
        own_ns = fullname.rpartition(".")[0] or None
        aliases = obj.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise AvroSchemaError(f"aliases of {fullname!r} must be a list of strings")
        return fullname, own_ns, frozenset(_fullname(a, own_ns) for a in aliases)

    def _record(self, obj: dict[str, Any], namespace: str | None) -> Record:
        fullname, own_ns, aliases = self._names(obj, namespace)
        record = Record(fullname, aliases)
        self.named[fullname] = record  # registered before the fields: recursion
        fields = obj.get("fields")
        if not isinstance(fields, list):
            raise AvroSchemaError(f"record {fullname!r} has no 'fields' list")
        names: set[str] = set()
        for position, f in enumerate(fields):
            if not isinstance(f, dict) or not isinstance(f.get("name"), str) or "type" not in f:
                raise AvroSchemaError(f"record {fullname!r}: field {position} needs a 'name' and a 'type'")
            if f["name"] in names:
                raise AvroSchemaError(f"record {fullname!r}: field {f['name']!r} is declared twice")
            names.add(f["name"])
            field_aliases = f.get("aliases") or []
            if not isinstance(field_aliases, list):
                raise AvroSchemaError(f"record {fullname!r}: aliases of field {f['name']!r} must be a list")
            record.fields.append(
                Field(
                    name=f["name"],
                    type=self.parse(f["type"], own_ns),
                    aliases=frozenset(str(a) for a in field_aliases),
                    has_default="default" in f,
                    position=position,
                )
            )
        return record

    def _enum(self, obj: dict[str, Any], namespace: str | None) -> Enum:
        fullname, _, aliases = self._names(obj, namespace)
        symbols = obj.get("symbols")
        if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
            raise AvroSchemaError(f"enum {fullname!r} needs a 'symbols' list of strings")
        default = obj.get("default")
        enum = Enum(fullname, aliases, tuple(symbols), default if isinstance(default, str) else None)
        self.named[fullname] = enum
        return enum

    def _fixed(self, obj: dict[str, Any], namespace: str | None) -> Fixed:
        fullname, _, aliases = self._names(obj, namespace)
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise AvroSchemaError(f"fixed {fullname!r} needs a non-negative integer 'size'")
        fixed = Fixed(fullname, aliases, size)
        self.named[fullname] = fixed
        return fixed


def parse_avro(schema: Any) -> AvroType:
    """Parse an Avro schema (JSON text, or the decoded JSON value) into a type graph.

    A string starting with ``{``, ``[`` or ``"`` is JSON text; any other string
    is a type name (``"int"`` and ``'"int"'`` are the same schema).

    Raises :class:`AvroSchemaError` if it is not well formed.
    """
    if isinstance(schema, AvroType):
        return schema
    if isinstance(schema, bytes):
        schema = schema.decode("utf-8")
    if isinstance(schema, str) and schema.lstrip().startswith(("{", "[", '"')):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise AvroSchemaError(f"schema is not valid JSON: {exc}") from None
    return _Parser().parse(schema, None)


@lru_cache(maxsize=512)
def parse_avro_text(text: str) -> AvroType:
    """:func:`parse_avro` of a JSON text, cached (the graph is treated as immutable)."""
    return parse_avro(text)


# --------------------------------------------------------------------------- canonical form


def _normalise(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"type"} and isinstance(obj["type"], str):
            return obj["type"]  # {"type": "string"} is "string"
        return {k: _normalise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_normalise(v) for v in obj]
    return obj


def canonical_form(schema: Any) -> str:
    """A canonical JSON text: equal for schemas that differ only in whitespace or key order.

    Unlike Avro's Parsing Canonical Form it keeps docs, defaults, aliases and
    other attributes, which matter to compatibility (and to Confluent).
    """
    if isinstance(schema, str | bytes):
        schema = json.loads(schema)
    return json.dumps(_normalise(schema), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- compatibility


class IncompatibilityKind(StrEnum):
    """Kinds of incompatibility (the names of Avro's ``SchemaIncompatibilityType``)."""

    NAME_MISMATCH = "NAME_MISMATCH"
    FIXED_SIZE_MISMATCH = "FIXED_SIZE_MISMATCH"
    MISSING_ENUM_SYMBOLS = "MISSING_ENUM_SYMBOLS"
    READER_FIELD_MISSING_DEFAULT_VALUE = "READER_FIELD_MISSING_DEFAULT_VALUE"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    MISSING_UNION_BRANCH = "MISSING_UNION_BRANCH"


@dataclass(frozen=True)
class Incompatibility:
    """One reason why a reader schema cannot read data of a writer schema.

    ``path`` is a JSON-pointer-like location in the reader schema.
    """

    kind: IncompatibilityKind
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind.value} at {self.path or '/'}: {self.message}"


def _names_match(reader: Named, writer: Named) -> bool:
    if reader.name == writer.name:
        return True
    return writer.fullname in reader.aliases or writer.name in {a.rpartition(".")[2] for a in reader.aliases}


class _Checker:
    def __init__(self) -> None:
        self._in_progress: set[tuple[int, int]] = set()
        self._compatible: set[tuple[int, int]] = set()

    def check(self, reader: AvroType, writer: AvroType, path: str) -> list[Incompatibility]:
        key = (id(reader), id(writer))
        if key in self._compatible or key in self._in_progress:
            return []  # recursion: assume compatible (co-inductively) while the pair is being checked
        self._in_progress.add(key)
        try:
            result = list(self._check(reader, writer, path))
        finally:
            self._in_progress.discard(key)
        if not result:
            self._compatible.add(key)
        return result

    def _check(self, reader: AvroType, writer: AvroType, path: str) -> Iterator[Incompatibility]:
        if isinstance(writer, Union) and not isinstance(reader, Union):
            for branch in writer.branches:
                yield from self.check(reader, branch, path)
            return
        if isinstance(reader, Union):
            yield from self._reader_union(reader, writer, path)
            return
        if isinstance(reader, Primitive) and isinstance(writer, Primitive):
            if reader.type_name != writer.type_name and writer.type_name not in PROMOTIONS.get(
                reader.type_name, frozenset()
            ):
                yield self._mismatch(reader, writer, path)
            return
        if type(reader) is not type(writer):
            yield self._mismatch(reader, writer, path)
            return
        if isinstance(reader, Named) and isinstance(writer, Named) and not _names_match(reader, writer):
            yield Incompatibility(
                IncompatibilityKind.NAME_MISMATCH,
                path + "/name",
                f"reader {reader.kind} name {reader.fullname!r} does not match "
                f"writer name {writer.fullname!r}",
            )
            return
        if isinstance(reader, Record) and isinstance(writer, Record):
            yield from self._record(reader, writer, path)
        elif isinstance(reader, Enum) and isinstance(writer, Enum):
            missing = [s for s in writer.symbols if s not in reader.symbols]
            if missing and reader.default is None:
                yield Incompatibility(
                    IncompatibilityKind.MISSING_ENUM_SYMBOLS,
                    path + "/symbols",
                    f"reader enum {reader.fullname!r} lacks writer symbols {missing} and has no default",
                )
        elif isinstance(reader, Fixed) and isinstance(writer, Fixed):
            if reader.size != writer.size:
                yield Incompatibility(
                    IncompatibilityKind.FIXED_SIZE_MISMATCH,
                    path + "/size",
                    f"reader fixed {reader.fullname!r} has size {reader.size}, writer has size {writer.size}",
                )
        elif isinstance(reader, Array) and isinstance(writer, Array):
            yield from self.check(reader.items, writer.items, path + "/items")
        elif isinstance(reader, Map) and isinstance(writer, Map):
            yield from self.check(reader.values, writer.values, path + "/values")

    def _reader_union(self, reader: Union, writer: AvroType, path: str) -> Iterator[Incompatibility]:
        writer_branches = writer.branches if isinstance(writer, Union) else [writer]
        for branch in writer_branches:
            if any(not self.check(rb, branch, f"{path}/{i}") for i, rb in enumerate(reader.branches)):
                continue
            kind = (
                IncompatibilityKind.MISSING_UNION_BRANCH
                if isinstance(writer, Union)
                else (IncompatibilityKind.TYPE_MISMATCH)
            )
            yield Incompatibility(
                kind,
                path,
                f"reader {reader.describe()} has no branch that can read writer type {branch.describe()}",
            )

    def _record(self, reader: Record, writer: Record, path: str) -> Iterator[Incompatibility]:
        for rf in reader.fields:
            fpath = f"{path}/fields/{rf.position}"
            wf = writer.field_named(rf.name)
            if wf is None:
                for alias in sorted(rf.aliases):
                    wf = writer.field_named(alias)
                    if wf is not None:
                        break
            if wf is None:
                if not rf.has_default:
                    yield Incompatibility(
                        IncompatibilityKind.READER_FIELD_MISSING_DEFAULT_VALUE,
                        fpath,
                        f"field {rf.name!r} of record {reader.fullname!r} is missing in the writer schema "
                        "and has no default value in the reader schema",
                    )
                continue
            yield from self.check(rf.type, wf.type, fpath + "/type")

    @staticmethod
    def _mismatch(reader: AvroType, writer: AvroType, path: str) -> Incompatibility:
        return Incompatibility(
            IncompatibilityKind.TYPE_MISMATCH,
            path,
            f"reader type {reader.describe()} cannot read writer type {writer.describe()}",
        )


def reader_writer_incompatibilities(reader: Any, writer: Any) -> list[Incompatibility]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty: it can).

    Both schemas may be JSON texts, decoded JSON values or parsed graphs.
    """
    return _Checker().check(parse_avro(reader), parse_avro(writer), "")


def can_read(reader: Any, writer: Any) -> bool:
    """Whether ``reader`` can read data written with ``writer``."""
    return not reader_writer_incompatibilities(reader, writer)


def check_compatibility(
    new: Any,
    previous: Sequence[Any],
    level: CompatibilityLevel | str,
    *,
    versions: Sequence[int] | None = None,
) -> list[str]:
    """Messages explaining why ``new`` may not follow ``previous`` (oldest first) under ``level``.

    An empty list means compatible.  Non-transitive levels compare with the
    last previous schema only.  ``versions`` (same length as ``previous``)
    labels the messages with version numbers.
    """
    level = parse_level(level) if isinstance(level, str) else level
    if level is CompatibilityLevel.NONE or not previous:
        return []
    if versions is not None and len(versions) != len(previous):
        raise ValueError("versions and previous schemas differ in length")
    labels = (
        [f"version {v}" for v in versions]
        if versions is not None
        else [f"previous schema #{i + 1}" for i in range(len(previous))]
    )
    pairs = list(zip(previous, labels, strict=True))
    if not level.transitive:
        pairs = pairs[-1:]
    new_graph = parse_avro(new)
    messages: list[str] = []
    for old, label in reversed(pairs):  # newest first, as a reader would see them
        old_graph = parse_avro(old)
        if level.backward:
            messages.extend(
                f"{level.value}: the new schema cannot read data written with {label}: {problem}"
                for problem in reader_writer_incompatibilities(new_graph, old_graph)
            )
        if level.forward:
            messages.extend(
                f"{level.value}: {label} cannot read data written with the new schema: {problem}"
                for problem in reader_writer_incompatibilities(old_graph, new_graph)
            )
    return messages
