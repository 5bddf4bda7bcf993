"""Binary COPY encoder: the numpy-built stream against a row-by-row ``struct`` reference.

COPY rows have no order and ``encode_rows`` groups rows by NULL pattern, so streams are
compared as multisets of parsed tuples, and separately byte for byte per row.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from typing import Any

import numpy as np
import pytest

from hftengine.storage.pgcopy import MAX_NULL_PATTERNS, Column, encode_rows

COLUMNS = (
    Column("ts", "timestamptz"),
    Column("name", "text"),
    Column("day", "date"),
    Column("price", "float8"),
    Column("qty", "int8"),
    Column("small", "int2"),
    Column("iv", "float8", nullable=True),
    Column("delta", "float8", nullable=True),
    Column("count", "int4"),
)
_FORMAT = {"float8": ">d", "int8": ">q", "int4": ">i", "int2": ">h", "timestamptz": ">q", "date": ">i"}


def reference_rows(columns: tuple[Column, ...], values: dict[str, Any], n: int) -> list[bytes]:
    """One COPY tuple per row, field by field with ``struct`` (the wire format as documented)."""
    out = []
    for r in range(n):
        parts = [struct.pack(">h", len(columns))]
        for col in columns:
            v = values[col.name]
            item = v[r] if isinstance(v, np.ndarray) and v.ndim else v
            if col.kind == "text":
                data = bytes(item)
                parts.append(struct.pack(">i", len(data)) + data)
            elif col.nullable and not math.isfinite(float(item)):
                parts.append(struct.pack(">i", -1))
            else:
                fmt = _FORMAT[col.kind]
                value = float(item) if fmt == ">d" else int(item)
                parts.append(struct.pack(">i", struct.calcsize(fmt)) + struct.pack(fmt, value))
        out.append(b"".join(parts))
    return out


def split_rows(stream: bytes, columns: tuple[Column, ...]) -> list[bytes]:
    """The stream cut into its tuples (reads each field's length)."""
    rows, pos = [], 0
    while pos < len(stream):
        start = pos
        (nfields,) = struct.unpack_from(">h", stream, pos)
        assert nfields == len(columns)
        pos += 2
        for _ in range(nfields):
            (length,) = struct.unpack_from(">i", stream, pos)
            pos += 4 + max(length, 0)
        rows.append(stream[start:pos])
    assert pos == len(stream)
    return rows


def make_values(n: int, rng: np.random.Generator, nan_share: float, patterns: int = 2) -> dict[str, Any]:
    iv = rng.uniform(0.05, 0.9, n)
    delta = rng.uniform(-1, 1, n)
    if patterns <= 2:  # NaN IV takes the Greek with it: two patterns (all set, both NULL)
        gone = rng.random(n) < nan_share
        iv[gone] = np.nan
        delta[gone] = np.nan
    else:
        iv[rng.random(n) < nan_share] = np.nan
        delta[rng.random(n) < nan_share] = np.inf
    return {
        "ts": rng.integers(0, 2**50, n),
        "name": np.array([b"NIFTY", b"TCSXY"])[rng.integers(0, 2, n)],
        "day": rng.integers(8000, 9000, n).astype(np.int32),
        "price": rng.uniform(0, 500, n),
        "qty": rng.integers(0, 10**9, n),
        "small": rng.integers(-3, 4, n).astype(np.int16),
        "iv": iv,
        "delta": delta,
        "count": np.int32(7),  # a scalar broadcast to every row
    }


@pytest.mark.parametrize(
    ("n", "nan_share", "patterns"), [(1, 0.0, 2), (257, 0.0, 2), (300, 0.3, 2), (500, 0.4, 4), (64, 1.0, 2)]
)
def test_stream_holds_exactly_the_reference_rows(n: int, nan_share: float, patterns: int) -> None:
    values = make_values(n, np.random.default_rng(n), nan_share, patterns)
    stream = encode_rows(COLUMNS, values, n)
    assert Counter(split_rows(stream, COLUMNS)) == Counter(reference_rows(COLUMNS, values, n))


def test_many_null_patterns_take_the_masked_layout_with_the_same_rows() -> None:
    columns = tuple(Column(f"c{i}", "float8", nullable=True) for i in range(6))
    rng = np.random.default_rng(3)
    n = 400
    values = {f"c{i}": np.where(rng.random(n) < 0.5, np.nan, rng.normal(size=n)) for i in range(6)}
    assert len({tuple(np.isnan(values[f"c{i}"][r]) for i in range(6)) for r in range(n)}) > MAX_NULL_PATTERNS
    stream = encode_rows(columns, values, n)
    assert Counter(split_rows(stream, columns)) == Counter(reference_rows(columns, values, n))


def test_non_nullable_float_keeps_nan_and_text_may_be_one_bytes_value() -> None:
    columns = (Column("u", "text"), Column("x", "float8"))
    values = {"u": b"BANKNIFTY", "x": np.array([1.5, np.nan])}
    rows = split_rows(encode_rows(columns, values, 2), columns)
    assert rows == reference_rows(columns, values, 2)
    assert math.isnan(struct.unpack(">d", rows[1][-8:])[0])


def test_no_rows_is_an_empty_stream() -> None:
    assert encode_rows(COLUMNS, make_values(0, np.random.default_rng(0), 0.0), 0) == b""
