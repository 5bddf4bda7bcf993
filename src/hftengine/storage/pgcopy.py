"""PostgreSQL binary COPY streams built with numpy, one chain at a time.

A COPY BINARY tuple is ``int16 field count`` followed by, per field, ``int32
length`` (−1 for NULL) and the big-endian value.  We lay every row out at full
width in a ``uint8`` matrix (one row per tuple), then drop the value bytes of
NULL fields with a boolean mask; ``matrix[mask]`` flattened row-major is the
exact COPY stream.  No Python loop over rows.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_DATE = date(2000, 1, 1)
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"

# Column kinds: numpy big-endian dtype of the value.
KIND_DTYPE: dict[str, str] = {
    "float8": ">f8",
    "int8": ">i8",
    "int4": ">i4",
    "int2": ">i2",
    "timestamptz": ">i8",
    "date": ">i4",
}


def pg_timestamp(ts: datetime) -> int:
    """Microseconds since 2000-01-01 UTC (PostgreSQL's timestamptz wire value)."""
    delta = ts - PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def pg_date(d: date) -> int:
    return (d - PG_EPOCH_DATE).days


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # a KIND_DTYPE key, or "text"
    nullable: bool = False


#: Most distinct NULL patterns encoded group by group (see :func:`encode_rows`); beyond
#: that, rows are laid out at full width and the NULL value bytes masked away.
MAX_NULL_PATTERNS = 16


def encode_rows(
    columns: Sequence[Column],
    values: dict[str, NDArray[np.generic] | bytes | int | float],
    n_rows: int,
) -> bytes:
    """COPY BINARY tuples (no header/trailer) for ``n_rows`` rows.

    ``values[name]`` is an array of length ``n_rows`` or a scalar broadcast to
    every row; text columns take ``bytes`` (the same for every row) or an
    ``S``-dtype array of equal-width values.  Floats that are not finite are
    sent as NULL in nullable columns.

    Rows that share a NULL pattern share a tuple layout, so each pattern is laid
    out as one structured array without the NULL value fields; the stream
    holds the groups one after another (COPY rows have no order).  A chain has
    a handful of patterns (every value; no IV, so no Greeks; ...): a few
    numpy calls per column and pattern, instead of a byte mask over the whole
    stream.
    """
    if n_rows == 0:
        return b""
    widths = tuple(_text_width(values[col.name]) if col.kind == "text" else 0 for col in columns)
    nullable = [
        i for i, col in enumerate(columns)
        if col.nullable and col.kind != "text" and np.asarray(values[col.name]).dtype.kind == "f"
    ]
    if nullable:
        finite = np.empty((len(nullable), n_rows), dtype=bool)
        for j, i in enumerate(nullable):
            np.isfinite(np.broadcast_to(values[columns[i].name], (n_rows,)), out=finite[j])
        if not finite.all():
            weights = np.left_shift(1, np.arange(len(nullable), dtype=np.int64))
            code = weights @ ~finite  # NULL pattern of each row, one bit per nullable column
            patterns, inverse = np.unique(code, return_inverse=True)
            if patterns.shape[0] > MAX_NULL_PATTERNS:
                return _encode_masked(columns, values, n_rows, widths, nullable, ~finite)
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(patterns.shape[0] + 1))
            parts = []
            for g, pattern in enumerate(patterns.tolist()):
                nulls = frozenset(i for j, i in enumerate(nullable) if pattern >> j & 1)
                rows = order[bounds[g] : bounds[g + 1]]
                parts.append(_encode_dense(columns, values, rows, widths, nulls, n_rows))
            return b"".join(parts)
    return _encode_dense(columns, values, None, widths, frozenset(), n_rows)


def _text_width(v: object) -> int:
    return len(v) if isinstance(v, bytes) else np.asarray(v).dtype.itemsize


@functools.lru_cache(maxsize=256)
def _layout(kinds: tuple[str, ...], widths: tuple[int, ...], nulls: frozenset[int]) -> tuple[np.dtype[Any], np.void]:
    """Tuple layout (columns in ``nulls`` have length −1 and no value bytes) and a row
    holding the field count and every length, to start each row from."""
    fields: list[tuple[str, str]] = [("nfields", ">i2")]
    for i, kind in enumerate(kinds):
        fields.append((f"l{i}", ">i4"))
        if i not in nulls:
            fields.append((f"v{i}", f"S{widths[i]}" if kind == "text" else KIND_DTYPE[kind]))
    dtype = np.dtype(fields)
    template = np.zeros(1, dtype=dtype)
    template["nfields"] = len(kinds)
    for i, kind in enumerate(kinds):
        size = -1 if i in nulls else widths[i] if kind == "text" else np.dtype(KIND_DTYPE[kind]).itemsize
        template[f"l{i}"] = size
    return dtype, template[0]


def _encode_dense(
    columns: Sequence[Column],
    values: dict[str, NDArray[np.generic] | bytes | int | float],
    rows: NDArray[np.intp] | None,
    widths: tuple[int, ...],
    nulls: frozenset[int],
    n_rows: int,
) -> bytes:
    """The tuples of ``rows`` (all ``n_rows`` when None), columns in ``nulls`` sent as NULL."""
    dtype, template = _layout(tuple(col.kind for col in columns), widths, nulls)
    out = np.empty(n_rows if rows is None else rows.shape[0], dtype=dtype)
    out[...] = template
    for i, col in enumerate(columns):
        if i in nulls:
            continue
        v = values[col.name]
        if rows is not None and isinstance(v, np.ndarray) and v.ndim:
            v = v[rows]
        out[f"v{i}"] = v
    return out.tobytes()


def _encode_masked(
    columns: Sequence[Column],
    values: dict[str, NDArray[np.generic] | bytes | int | float],
    n_rows: int,
    widths: tuple[int, ...],
    nullable: list[int],
    null_rows: NDArray[np.bool_],
) -> bytes:
    """Every row at full width, then the value bytes of NULL fields dropped with a byte mask
    (``matrix[mask]`` flattened row-major is the exact stream): for many NULL patterns."""
    dtype, template = _layout(tuple(col.kind for col in columns), widths, frozenset())
    out = np.empty(n_rows, dtype=dtype)
    out[...] = template
    for i, col in enumerate(columns):
        v = values[col.name]
        if i in nullable:
            v = np.where(null_rows[nullable.index(i)], 0.0, v)
        out[f"v{i}"] = v
    raw = out.view(np.uint8).reshape(n_rows, dtype.itemsize)
    keep = np.ones(raw.shape, dtype=bool)
    for j, i in enumerate(nullable):
        nulls = null_rows[j]
        out[f"l{i}"][nulls] = -1
        off = dtype.fields[f"v{i}"][1]  # type: ignore[index]
        keep[np.ix_(nulls, np.arange(off, off + dtype[f"v{i}"].itemsize))] = False
    return raw[keep].tobytes()
