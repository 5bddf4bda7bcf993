"""Packed numpy vectors inside Avro ``bytes`` fields (logicalType ``hft.ndarray``).

A per-strike vector travels as its raw little-endian buffer; the schema names
the numpy dtype (``"dtype": "<f8"``), so any consumer can decode it
(``numpy.frombuffer(value, dtype)``, or read 8-byte IEEE doubles in any
language).  Decoding is a zero-copy view: about 1 µs per field instead of
~100 ns per element for an Avro array.
"""

from __future__ import annotations

from collections.abc import Hashable
from functools import cache
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

LOGICAL_TYPE = "hft.ndarray"


@cache
def _wire_cached(dtype: Hashable) -> np.dtype[Any]:
    wire: np.dtype[Any] = np.dtype(dtype).newbyteorder("<")  # type: ignore[call-overload]
    return wire


def _wire(dtype: DTypeLike) -> np.dtype[Any]:
    """The little-endian wire dtype of ``dtype``, cached (building it costs as much as a small unpack);
    an unhashable dtype spec (a list of fields) is built each time, as before."""
    try:
        return _wire_cached(dtype)  # type: ignore[arg-type]  # unhashable specs raise TypeError
    except TypeError:
        return np.dtype(dtype).newbyteorder("<")


def pack(values: Any, dtype: DTypeLike) -> bytes:
    """Vector → bytes in the wire dtype (little-endian)."""
    return np.ascontiguousarray(values, dtype=_wire(dtype)).tobytes()


def unpack(data: bytes | bytearray | memoryview | Any, dtype: DTypeLike) -> NDArray[Any]:
    """bytes → read-only numpy view; lists/arrays pass through as arrays.

    Raises ``ValueError`` when the buffer length is not a multiple of the item size.
    """
    dt = _wire(dtype)
    if isinstance(data, bytes | bytearray | memoryview):
        if len(data) % dt.itemsize:
            raise ValueError(f"packed vector of {len(data)} bytes is not a multiple of {dt.itemsize} ({dt.str})")
        return np.frombuffer(data, dtype=dt)
    return np.asarray(data, dtype=dt)
