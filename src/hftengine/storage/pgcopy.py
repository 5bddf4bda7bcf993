"""PostgreSQL binary COPY streams built with numpy, one chain at a time.

A COPY BINARY tuple is ``int16 field count`` followed by, per field, ``int32
length`` (−1 for NULL) and the big-endian value.  We lay every row out at full
width in a ``uint8`` matrix (one row per tuple), then drop the value bytes of
NULL fields with a boolean mask; ``matrix[mask]`` flattened row-major is the
exact COPY stream.  No Python loop over rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

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


def encode_rows(
    columns: Sequence[Column],
    values: dict[str, NDArray[np.generic] | bytes | int | float],
    n_rows: int,
) -> bytes:
    """COPY BINARY tuples (no header/trailer) for ``n_rows`` rows.

    ``values[name]`` is an array of length ``n_rows`` or a scalar broadcast to
    every row; text columns take ``bytes`` (the same for every row) or an
    ``S``-dtype array of equal-width values.  Floats that are NaN are sent as
    NULL in nullable columns.
    """
    if n_rows == 0:
        return b""
    fields: list[tuple[str, str]] = [("nfields", ">i2")]
    for i, col in enumerate(columns):
        fields.append((f"l{i}", ">i4"))
        if col.kind == "text":
            v = values[col.name]
            width = len(v) if isinstance(v, bytes) else np.asarray(v).dtype.itemsize
            fields.append((f"v{i}", f"S{width}"))
        else:
            fields.append((f"v{i}", KIND_DTYPE[col.kind]))
    dtype = np.dtype(fields)
    rows = np.empty(n_rows, dtype=dtype)
    rows["nfields"] = len(columns)
    null_masks: list[tuple[int, NDArray[np.bool_]]] = []
    for i, col in enumerate(columns):
        v = values[col.name]
        if col.kind == "text":
            width = dtype[f"v{i}"].itemsize
            rows[f"l{i}"] = width
            rows[f"v{i}"] = v
            continue
        rows[f"l{i}"] = np.dtype(KIND_DTYPE[col.kind]).itemsize
        arr = np.asarray(v)
        if col.nullable and arr.dtype.kind == "f":
            nulls = ~np.isfinite(np.broadcast_to(arr, (n_rows,)))
            if nulls.any():
                rows[f"l{i}"][nulls] = -1
                null_masks.append((i, nulls))
            arr = np.where(np.isfinite(arr), arr, 0.0)
        rows[f"v{i}"] = arr
    raw = rows.view(np.uint8).reshape(n_rows, dtype.itemsize)
    if not null_masks:
        return raw.tobytes()
    keep = np.ones(raw.shape, dtype=bool)
    for i, nulls in null_masks:
        off = dtype.fields[f"v{i}"][1]  # type: ignore[index]
        size = dtype[f"v{i}"].itemsize
        keep[np.ix_(nulls, np.arange(off, off + size))] = False
    return raw[keep].tobytes()
