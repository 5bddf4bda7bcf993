"""Binary codec for the frozen state dataclasses kept in Faust tables.

A value is ``b"HS1"`` + zlib( 4-byte header length + JSON header + array buffers ).  The JSON
header is the dataclass tree (type names, scalars, dates, tuples); numpy arrays are referenced
by index and stored after it as byte-shuffled little-endian buffers (about 17 % smaller after
zlib than plain buffers).  Encoding is deterministic: the same
state always gives the same bytes, which makes replays comparable byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from datetime import date
from typing import Any

import numpy as np

from hftengine.analytics import cumoi, levels, patterns, state, velocity

MAGIC = b"HS1"
_LEN = struct.Struct(">I")
#: Every dataclass a table value may contain, by class name.
TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        state.ChainState, cumoi.CumOIState, velocity.VelocityState, velocity.Ring, velocity.Sample,
        levels.LevelsState, levels.TrackedLevel, patterns.PatternState,
    )
}


class StateCodecError(ValueError):
    """A table value that does not decode (corrupt, or written by an incompatible version)."""


def _encode(value: Any, arrays: list[np.ndarray]) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, date):
        return {"d": value.isoformat()}
    if isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        arrays.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False))
        return {"a": len(arrays) - 1, "t": arr.dtype.newbyteorder("<").str, "s": list(arr.shape)}
    if isinstance(value, tuple | list):
        return {"l": [_encode(v, arrays) for v in value]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if TYPES.get(name) is not type(value):
            raise TypeError(f"{name} is not a registered state type")
        return {"c": name, "f": {f.name: _encode(getattr(value, f.name), arrays) for f in dataclasses.fields(value)}}
    raise TypeError(f"cannot encode {type(value).__name__} in a table value")


def _shuffle(arr: np.ndarray) -> bytes:
    """Byte-shuffled buffer (all first bytes, then all second bytes...): compresses better."""
    if arr.dtype.itemsize == 1:
        return arr.tobytes()
    return np.ascontiguousarray(arr).view(np.uint8).reshape(-1, arr.dtype.itemsize).T.tobytes()


def _unshuffle(data: memoryview, dtype: np.dtype[Any], shape: list[int]) -> np.ndarray:
    count = int(np.prod(shape)) if shape else 1
    raw = np.frombuffer(data, dtype=np.uint8)
    if dtype.itemsize > 1:
        raw = raw.reshape(dtype.itemsize, count).T.copy()
    out = raw.view(dtype).reshape(shape)
    out.flags.writeable = False
    return out


def encode_state(value: Any, *, level: int = 1) -> bytes:
    """Deterministic bytes of a state dataclass tree."""
    arrays: list[np.ndarray] = []
    tree = _encode(value, arrays)
    header = json.dumps(tree, separators=(",", ":"), allow_nan=True).encode()
    body = b"".join([_LEN.pack(len(header)), header, *(_shuffle(a) for a in arrays)])
    return MAGIC + zlib.compress(body, level)


def _decode(node: Any, buffers: list[np.ndarray]) -> Any:
    if not isinstance(node, dict):
        return node
    if "d" in node:
        return date.fromisoformat(node["d"])
    if "a" in node:
        return buffers[node["a"]]
    if "l" in node:
        return tuple(_decode(v, buffers) for v in node["l"])
    cls = TYPES.get(node.get("c", ""))
    if cls is None:
        raise StateCodecError(f"unknown state type {node.get('c')!r}")
    return cls(**{k: _decode(v, buffers) for k, v in node["f"].items()})


def decode_state(data: bytes) -> Any:
    """Inverse of :func:`encode_state`; arrays are read-only views."""
    if not data.startswith(MAGIC):
        raise StateCodecError("not a state value (bad magic)")
    try:
        body = zlib.decompress(data[len(MAGIC):])
        (n,) = _LEN.unpack_from(body)
        tree = json.loads(body[_LEN.size:_LEN.size + n])
    except (zlib.error, struct.error, ValueError) as exc:
        raise StateCodecError(f"corrupt state value: {exc}") from exc
    # first pass: collect array descriptors in index order to slice the buffer area
    specs: dict[int, tuple[str, list[int]]] = {}

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if "a" in node:
                specs[node["a"]] = (node["t"], node["s"])
            for v in node.values():
                if isinstance(v, dict | list):
                    collect(v)
        elif isinstance(node, list):
            for v in node:
                collect(v)

    collect(tree)
    offset = _LEN.size + n
    view = memoryview(body)
    buffers: list[np.ndarray] = []
    for i in range(len(specs)):
        dtype_str, shape = specs[i]
        dt = np.dtype(dtype_str)
        count = int(np.prod(shape)) if shape else 1
        size = count * dt.itemsize
        if offset + size > len(body):
            raise StateCodecError("truncated state value")
        buffers.append(_unshuffle(view[offset:offset + size], dt, shape))
        offset += size
    if offset != len(body):
        raise StateCodecError("trailing bytes in state value")
    try:
        return _decode(tree, buffers)
    except TypeError as exc:
        raise StateCodecError(f"state value does not fit the current state types: {exc}") from exc
