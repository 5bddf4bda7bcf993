"""Avro schema compatibility (hftengine.codec.compat): resolution rules, levels, canonical form.

Every "compatible" reader/writer case is also checked against fastavro's own
schema resolution: a datum written with the writer schema must decode with
the reader schema.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hftengine.codec.compat import (
    AvroSchemaError,
    CompatibilityLevel,
    IncompatibilityKind,
    can_read,
    canonical_form,
    check_compatibility,
    parse_avro,
    parse_level,
    reader_writer_incompatibilities,
)

K = IncompatibilityKind


def record(name: str, *fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": list(fields), **extra}


def fld(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def enum(name: str, *symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": name, "symbols": list(symbols), **extra}


def fixed(name: str, size: int) -> dict[str, Any]:
    return {"type": "fixed", "name": name, "size": size}


def array(items: Any) -> dict[str, Any]:
    return {"type": "array", "items": items}


def amap(values: Any) -> dict[str, Any]:
    return {"type": "map", "values": values}


LINKED = record("Node", fld("value", "int"), fld("next", ["null", "Node"], default=None))
LINKED_LONG = record("Node", fld("value", "long"), fld("next", ["null", "Node"], default=None))
LINKED_STRING = record("Node", fld("value", "string"), fld("next", ["null", "Node"], default=None))
TREE = record(
    "Tree",
    fld("label", "string"),
    fld("children", array(record("Branch", fld("weight", "int"), fld("subtree", ["null", "Tree"])))),
)
TREE_BAD = record(
    "Tree",
    fld("label", "string"),
    fld("children", array(record("Branch", fld("weight", "boolean"), fld("subtree", ["null", "Tree"])))),
)

# (id, reader, writer, expected incompatibility kinds with their paths; [] = compatible)
CASES: list[tuple[str, Any, Any, list[tuple[IncompatibilityKind, str]]]] = [
    # primitives and promotions
    *[
        (f"same-{t}", t, t, [])
        for t in ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
    ],
    ("int-to-long", "long", "int", []),
    ("int-to-float", "float", "int", []),
    ("int-to-double", "double", "int", []),
    ("long-to-float", "float", "long", []),
    ("long-to-double", "double", "long", []),
    ("float-to-double", "double", "float", []),
    ("bytes-to-string", "string", "bytes", []),
    ("string-to-bytes", "bytes", "string", []),
    ("long-to-int", "int", "long", [(K.TYPE_MISMATCH, "")]),
    ("double-to-float", "float", "double", [(K.TYPE_MISMATCH, "")]),
    ("float-to-long", "long", "float", [(K.TYPE_MISMATCH, "")]),
    ("int-to-string", "string", "int", [(K.TYPE_MISMATCH, "")]),
    ("boolean-to-int", "int", "boolean", [(K.TYPE_MISMATCH, "")]),
    ("null-to-int", "int", "null", [(K.TYPE_MISMATCH, "")]),
    ("primitive-object-form", {"type": "long"}, "int", []),
    # logical types follow the underlying type
    ("date-from-int", {"type": "int", "logicalType": "date"}, "int", []),
    ("int-from-date", "int", {"type": "int", "logicalType": "date"}, []),
    ("timestamp-from-int", {"type": "long", "logicalType": "timestamp-millis"}, "int", []),
    ("uuid-from-bytes", {"type": "string", "logicalType": "uuid"}, "bytes", []),
    ("date-from-string", {"type": "int", "logicalType": "date"}, "string", [(K.TYPE_MISMATCH, "")]),
    # records
    ("record-same", record("R", fld("a", "int")), record("R", fld("a", "int")), []),
    (
        "record-reader-adds-field-with-default",
        record("R", fld("a", "int"), fld("b", "string", default="x")),
        record("R", fld("a", "int")),
        [],
    ),
    (
        "record-reader-adds-nullable-field-default-null",
        record("R", fld("a", "int"), fld("b", ["null", "string"], default=None)),
        record("R", fld("a", "int")),
        [],
    ),
    (
        "record-reader-adds-field-without-default",
        record("R", fld("a", "int"), fld("b", "string")),
        record("R", fld("a", "int")),
        [(K.READER_FIELD_MISSING_DEFAULT_VALUE, "/fields/1")],
    ),
    (
        "record-writer-only-field-ignored",
        record("R", fld("a", "int")),
        record("R", fld("a", "int"), fld("b", "string")),
        [],
    ),
    (
        "record-field-renamed-with-alias",
        record("R", fld("amount", "long", aliases=["qty"])),
        record("R", fld("qty", "int")),
        [],
    ),
    (
        "record-field-renamed-without-alias",
        record("R", fld("amount", "long")),
        record("R", fld("qty", "int")),
        [(K.READER_FIELD_MISSING_DEFAULT_VALUE, "/fields/0")],
    ),
    (
        "record-field-type-change",
        record("R", fld("a", "int"), fld("b", "int")),
        record("R", fld("a", "int"), fld("b", "string")),
        [(K.TYPE_MISMATCH, "/fields/1/type")],
    ),
    (
        "record-field-promotion",
        record("R", fld("a", "double")),
        record("R", fld("a", "int")),
        [],
    ),
    (
        "record-name-mismatch",
        record("R", fld("a", "int")),
        record("S", fld("a", "int")),
        [(K.NAME_MISMATCH, "/name")],
    ),
    (
        "record-reader-alias-matches-writer-name",
        record("R", fld("a", "int"), aliases=["S"]),
        record("S", fld("a", "int")),
        [],
    ),
    (
        "record-namespaces-ignored",
        record("R", fld("a", "int"), namespace="x.y"),
        record("R", fld("a", "int"), namespace="z"),
        [],
    ),
    (
        "record-nested",
        record("Outer", fld("inner", record("Inner", fld("v", "long")))),
        record("Outer", fld("inner", record("Inner", fld("v", "int")))),
        [],
    ),
    (
        "record-nested-mismatch-path",
        record("Outer", fld("x", "int"), fld("inner", record("Inner", fld("v", "int")))),
        record("Outer", fld("x", "int"), fld("inner", record("Inner", fld("v", "long")))),
        [(K.TYPE_MISMATCH, "/fields/1/type/fields/0/type")],
    ),
    ("record-vs-int", record("R", fld("a", "int")), "int", [(K.TYPE_MISMATCH, "")]),
    # enums
    ("enum-same", enum("E", "A", "B"), enum("E", "A", "B"), []),
    ("enum-reader-adds-symbol", enum("E", "A", "B", "C"), enum("E", "A", "B"), []),
    ("enum-writer-extra-symbol", enum("E", "A"), enum("E", "A", "B"), [(K.MISSING_ENUM_SYMBOLS, "/symbols")]),
    ("enum-writer-extra-symbol-reader-default", enum("E", "A", "Z", default="Z"), enum("E", "A", "B"), []),
    ("enum-name-mismatch", enum("E", "A"), enum("F", "A"), [(K.NAME_MISMATCH, "/name")]),
    ("enum-vs-string", enum("E", "A"), "string", [(K.TYPE_MISMATCH, "")]),
    # fixed
    ("fixed-same", fixed("F", 16), fixed("F", 16), []),
    ("fixed-size-mismatch", fixed("F", 16), fixed("F", 8), [(K.FIXED_SIZE_MISMATCH, "/size")]),
    ("fixed-name-mismatch", fixed("F", 16), fixed("G", 16), [(K.NAME_MISMATCH, "/name")]),
    ("fixed-vs-bytes", fixed("F", 4), "bytes", [(K.TYPE_MISMATCH, "")]),
    # arrays and maps
    ("array-items-promotion", array("long"), array("int"), []),
    ("array-items-mismatch", array("int"), array("string"), [(K.TYPE_MISMATCH, "/items")]),
    ("map-values-promotion", amap("double"), amap("float"), []),
    ("map-values-mismatch", amap("int"), amap("long"), [(K.TYPE_MISMATCH, "/values")]),
    ("array-vs-map", array("int"), amap("int"), [(K.TYPE_MISMATCH, "")]),
    (
        "array-of-records",
        array(record("R", fld("a", "int"), fld("b", "int", default=0))),
        array(record("R", fld("a", "int"))),
        [],
    ),
    # unions
    ("union-same", ["null", "int"], ["null", "int"], []),
    ("union-reader-superset", ["null", "int", "string"], ["null", "int"], []),
    ("union-reader-lacks-branch", ["null", "int"], ["null", "int", "string"], [(K.MISSING_UNION_BRANCH, "")]),
    ("union-branch-promotion", ["null", "long"], ["null", "int"], []),
    ("union-reader-contains-writer", ["null", "string"], "string", []),
    ("union-reader-promotes-writer", ["null", "double"], "int", []),
    ("union-reader-no-branch", ["null", "string"], "int", [(K.TYPE_MISMATCH, "")]),
    ("union-writer-all-readable", "long", ["int", "long"], []),
    ("union-writer-null-unreadable", "int", ["null", "int"], [(K.TYPE_MISMATCH, "")]),
    (
        "union-of-records-by-name",
        ["null", record("A", fld("x", "int")), record("B", fld("y", "long"))],
        ["null", record("B", fld("y", "int"))],
        [],
    ),
    (
        "union-of-records-field-incompatible",
        ["null", record("A", fld("x", "int"))],
        ["null", record("A", fld("x", "string"))],
        [(K.MISSING_UNION_BRANCH, "")],
    ),
    # recursive named types
    ("recursive-same", LINKED, LINKED, []),
    ("recursive-promotion", LINKED_LONG, LINKED, []),
    ("recursive-mismatch", LINKED_STRING, LINKED, [(K.TYPE_MISMATCH, "/fields/0/type")]),
    ("mutually-recursive-same", TREE, TREE, []),
    (
        "mutually-recursive-mismatch",
        TREE_BAD,
        TREE,
        [(K.TYPE_MISMATCH, "/fields/1/type/items/fields/0/type")],
    ),
]


@pytest.mark.parametrize(("reader", "writer", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reader_writer_rules(
    reader: Any, writer: Any, expected: list[tuple[IncompatibilityKind, str]]
) -> None:
    found = reader_writer_incompatibilities(reader, writer)
    assert [(i.kind, i.path) for i in found] == expected, [str(i) for i in found]
    assert can_read(reader, writer) is (not expected)


# ----------------------------------------------------------------- oracle: fastavro's own resolution


def sample(schema: Any, named: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A datum of ``schema`` (recursion stops at the null branch of a union)."""
    named = {} if named is None else named
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"] if depth < 2 else ["null"]
        return sample(branches[0] if branches else "null", named, depth + 1)
    if isinstance(schema, str):
        if schema in named:
            return sample(named[schema], named, depth + 1)
        return {
            "null": None,
            "boolean": True,
            "int": 7,
            "long": 7,
            "float": 1.5,
            "double": 2.5,
            "bytes": b"ab",
            "string": "ab",
        }[schema]
    t = schema["type"]
    if isinstance(t, str) and t in ("record", "enum", "fixed"):
        named[schema["name"]] = schema
    if t == "record":
        return {f["name"]: sample(f["type"], named, depth + 1) for f in schema["fields"]}
    if t == "enum":
        return schema["symbols"][0]
    if t == "fixed":
        return b"\x01" * schema["size"]
    if t == "array":
        return [sample(schema["items"], named, depth + 1)]
    if t == "map":
        return {"k": sample(schema["values"], named, depth + 1)}
    if isinstance(t, str) and schema.get("logicalType") == "date":
        return 19000  # days; fastavro returns a date for the logical type
    if isinstance(t, str) and schema.get("logicalType") == "timestamp-millis":
        return 1_700_000_000_000
    if isinstance(t, str) and schema.get("logicalType") == "uuid":
        return "0f8fad5b-d9cb-469f-a165-70867728950e"
    return sample(t, named, depth)


#: compatible cases that fastavro resolves differently from the Avro (Java) rules
FASTAVRO_DIFFERS = {
    "record-namespaces-ignored",  # fastavro matches named types by full name
    "uuid-from-bytes",  # fastavro cannot decode raw bytes as a uuid string
}


@pytest.mark.parametrize(
    ("reader", "writer"),
    [c[1:3] for c in CASES if not c[3] and c[0] not in FASTAVRO_DIFFERS],
    ids=[c[0] for c in CASES if not c[3] and c[0] not in FASTAVRO_DIFFERS],
)
def test_compatible_cases_decode_with_fastavro(reader: Any, writer: Any) -> None:
    datum = sample(writer)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), datum)
    buf.seek(0)
    fastavro.schemaless_reader(buf, fastavro.parse_schema(writer), fastavro.parse_schema(reader))
    assert buf.tell() == len(buf.getvalue())


# ----------------------------------------------------------------- levels, both directions, transitive

V_BASE = record("Quote", fld("symbol", "string"), fld("ltp", "double"))
V_ADD_DEFAULT = record("Quote", fld("symbol", "string"), fld("ltp", "double"), fld("oi", "long", default=0))
V_ADD_REQUIRED = record("Quote", fld("symbol", "string"), fld("ltp", "double"), fld("oi", "long"))
V_DROP_LTP = record("Quote", fld("symbol", "string"))
V_BASE_LTP_DEFAULT = record("Quote", fld("symbol", "string"), fld("ltp", "double", default=0.0))
V_LTP_STRING = record("Quote", fld("symbol", "string"), fld("ltp", "string"))

# (id, previous, new, {level: compatible?})
LEVEL_CASES: list[tuple[str, Any, Any, dict[str, bool]]] = [
    ("add-field-with-default", V_BASE, V_ADD_DEFAULT, {"BACKWARD": True, "FORWARD": True, "FULL": True}),
    (
        "add-field-without-default",
        V_BASE,
        V_ADD_REQUIRED,
        {"BACKWARD": False, "FORWARD": True, "FULL": False},
    ),
    ("drop-field-without-default", V_BASE, V_DROP_LTP, {"BACKWARD": True, "FORWARD": False, "FULL": False}),
    (
        "drop-field-with-default",
        V_BASE_LTP_DEFAULT,
        V_DROP_LTP,
        {"BACKWARD": True, "FORWARD": True, "FULL": True},
    ),
    ("change-type", V_BASE, V_LTP_STRING, {"BACKWARD": False, "FORWARD": False, "FULL": False, "NONE": True}),
]


@pytest.mark.parametrize(
    ("previous", "new", "expect"), [c[1:] for c in LEVEL_CASES], ids=[c[0] for c in LEVEL_CASES]
)
def test_levels_both_directions(previous: Any, new: Any, expect: dict[str, bool]) -> None:
    for level, compatible in expect.items():
        messages = check_compatibility(new, [previous], level)
        assert (not messages) is compatible, (level, messages)
        if level != "NONE":  # with a single previous version, transitive = non-transitive
            transitive = check_compatibility(new, [previous], level + "_TRANSITIVE")
            assert [m.partition(":")[2] for m in transitive] == [m.partition(":")[2] for m in messages]


def test_backward_transitive_checks_every_previous_version() -> None:
    v1 = record("R", fld("a", "int"))
    v2 = record("R", fld("a", "int"), fld("b", "string", default=""))
    v3 = record("R", fld("a", "int"), fld("b", "string"))  # drops b's default: cannot read v1 data
    assert check_compatibility(v3, [v1, v2], "BACKWARD") == []
    messages = check_compatibility(v3, [v1, v2], "BACKWARD_TRANSITIVE", versions=[1, 2])
    assert len(messages) == 1
    assert "version 1" in messages[0] and "READER_FIELD_MISSING_DEFAULT_VALUE" in messages[0]
    assert "'b'" in messages[0]


def test_forward_transitive_checks_every_previous_version() -> None:
    v1 = record("R", fld("a", "int"), fld("b", "string"))
    v2 = record("R", fld("a", "int"), fld("b", "string", default=""))
    v3 = record("R", fld("a", "int"))  # v2 reads v3 data (default), v1 cannot
    assert check_compatibility(v3, [v1, v2], "FORWARD") == []
    messages = check_compatibility(v3, [v1, v2], "FORWARD_TRANSITIVE", versions=[1, 2])
    assert len(messages) == 1
    assert messages[0].startswith(
        "FORWARD_TRANSITIVE: version 1 cannot read data written with the new schema"
    )


def test_full_transitive_checks_both_directions_against_all() -> None:
    v1 = record("R", fld("a", "int"))
    v2 = record("R", fld("a", "long"))  # reads v1 (promotion); v1 cannot read v2
    v3 = record("R", fld("a", "long"), fld("c", "int", default=0))
    assert check_compatibility(v3, [v1, v2], "FULL") == []
    messages = check_compatibility(v3, [v1, v2], "FULL_TRANSITIVE", versions=[1, 2])
    assert len(messages) == 1
    assert "version 1 cannot read" in messages[0] and "TYPE_MISMATCH at /fields/0/type" in messages[0]


def test_none_and_no_previous_are_compatible() -> None:
    assert check_compatibility("int", ["string"], CompatibilityLevel.NONE) == []
    assert check_compatibility("int", [], "FULL_TRANSITIVE") == []


def test_message_is_readable() -> None:
    (problem,) = reader_writer_incompatibilities(V_ADD_REQUIRED, V_BASE)
    assert str(problem) == (
        "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/2: field 'oi' of record 'Quote' is missing in the "
        "writer schema and has no default value in the reader schema"
    )
    (problem,) = reader_writer_incompatibilities("int", "string")
    assert str(problem) == "TYPE_MISMATCH at /: reader type int cannot read writer type string"


def test_level_properties_and_parsing() -> None:
    assert parse_level("backward") is CompatibilityLevel.BACKWARD
    assert parse_level(" Full_Transitive ") is CompatibilityLevel.FULL_TRANSITIVE
    assert CompatibilityLevel.FULL.backward and CompatibilityLevel.FULL.forward
    assert not CompatibilityLevel.FORWARD.backward and CompatibilityLevel.FORWARD_TRANSITIVE.transitive
    for bad in ("SIDEWAYS", "", None, 3):
        with pytest.raises(ValueError, match="compatibility level"):
            parse_level(bad)


# ----------------------------------------------------------------- parsing and canonical form


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("Unknown", "unknown type 'Unknown'"),
        (["int", "int"], "union contains 'int' twice"),
        (["null", ["int", "string"]], "may not immediately contain another union"),
        ({"type": "record", "name": "R"}, "no 'fields' list"),
        ({"type": "enum", "name": "E"}, "'symbols'"),
        ({"type": "fixed", "name": "F"}, "'size'"),
        ({"type": "array"}, "'items'"),
        (
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}],
            },
            "declared twice",
        ),
        ("{not json", "not valid JSON"),
        (5, "a schema is"),
    ],
)
def test_parse_rejects_malformed(schema: Any, message: str) -> None:
    with pytest.raises(AvroSchemaError, match=message):
        parse_avro(schema)


def test_named_references_resolve_within_namespace() -> None:
    schema = record(
        "Chain",
        fld("leg", record("Leg", fld("strike", "double"))),
        fld("other", "Leg"),
        fld("qualified", "nse.Leg"),
        namespace="nse",
    )
    graph = parse_avro(schema)
    assert can_read(graph, schema)


def test_canonical_form_ignores_whitespace_and_key_order() -> None:
    a = '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}'
    b = '{ "fields":[ {"type":{"type":"int"},"name":"a"} ],\n "name":"R","type":"record" }'
    assert canonical_form(a) == canonical_form(b)
    # field order and docs/defaults are part of the schema
    c = '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": 0}]}'
    assert canonical_form(a) != canonical_form(c)
    assert canonical_form('"string"') == canonical_form('{"type": "string"}')


# ----------------------------------------------------------------- properties

PRIMS = ("boolean", "int", "long", "float", "double", "bytes", "string")
field_types = st.recursive(
    st.sampled_from(PRIMS),
    lambda inner: st.one_of(
        st.builds(array, inner),
        st.builds(amap, inner),
        st.builds(lambda t: ["null", t], st.sampled_from(PRIMS)),
    ),
    max_leaves=4,
)
records = st.lists(field_types, min_size=1, max_size=5).map(
    lambda types: record("P", *(fld(f"f{i}", t) for i, t in enumerate(types)))
)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(records)
def test_every_schema_is_fully_compatible_with_itself(schema: dict[str, Any]) -> None:
    assert check_compatibility(schema, [schema], "FULL_TRANSITIVE") == []


@settings(max_examples=60, derandomize=True, deadline=None)
@given(records, field_types)
def test_adding_a_field_with_default_is_backward_and_forward(schema: dict[str, Any], new_type: Any) -> None:
    optional = new_type if isinstance(new_type, list) else ["null", new_type]
    evolved = dict(schema, fields=[*schema["fields"], fld("added", optional, default=None)])
    assert check_compatibility(evolved, [schema], "FULL") == []
    without_default = dict(schema, fields=[*schema["fields"], fld("added", optional)])
    assert check_compatibility(without_default, [schema], "FORWARD") == []
    assert check_compatibility(without_default, [schema], "BACKWARD") != []
