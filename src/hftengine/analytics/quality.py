"""Data-quality flags of a chain snapshot.

Per leg a bit set (:class:`LegQuality`, ``uint8``); per chain a sorted tuple of flag
names (:data:`CHAIN_FLAGS`), stored with every chain metric row. Flags describe the
input; they never stop the analytics (rows that cannot be computed are NaN).
"""

from __future__ import annotations

import math
from enum import IntFlag
from typing import Final

import numpy as np
from numpy.typing import NDArray

from hftengine.analytics.normalized_black import FloatArray, _count_nonzero

#: Every chain-level flag name, in the order they are reported.
CHAIN_FLAGS: Final = (
    "zero_spot",
    "expired",
    "missing_legs",
    "one_sided_legs",
    "crossed_quotes",
    "zero_quotes",
    "iv_unsolvable",
    "stale_oi",
    "no_forward",
)


class LegQuality(IntFlag):
    """Per-leg quality bits (``uint8``)."""

    OK = 0
    MISSING = 1  #: leg absent in the source
    ONE_SIDED = 2  #: exactly one of bid / ask quoted
    CROSSED = 4  #: bid > ask > 0
    ZERO_QUOTES = 8  #: neither bid nor ask quoted
    IV_UNSOLVABLE = 16  #: a usable price exists but no volatility reproduces it
    NO_PRICE = 32  #: neither a usable mid nor a positive last price


def _bits_of(has_bid: bool, has_ask: bool, crossed: bool, priced: bool, iv_ok: bool, present: bool) -> int:
    """The :class:`LegQuality` bits of one leg (the rule; vectorised through a table)."""
    if not present:
        return LegQuality.MISSING
    bits = 0
    if has_bid != has_ask:
        bits |= LegQuality.ONE_SIDED
    if has_bid and has_ask and crossed:
        bits |= LegQuality.CROSSED
    if not (has_bid or has_ask):
        bits |= LegQuality.ZERO_QUOTES
    if priced and not iv_ok:
        bits |= LegQuality.IV_UNSOLVABLE
    if not priced:
        bits |= LegQuality.NO_PRICE
    return int(bits)


#: Packs the eight 0/1 bytes of a little-endian uint64 into one byte (bit gather by a
#: multiplication): one integer multiply and one shift instead of eight shifts and ors.
_GATHER: Final = np.uint64(0x8040201008040201)
_SHIFT: Final = np.uint64(56)


def _quality_table() -> NDArray[np.uint8]:
    """Bits for every packed byte of the six features (columns of :func:`quality_bits`)."""
    features = np.array([[bool(code >> i & 1) for i in range(8)] for code in range(256)], dtype=np.bool_)
    packed = (features.view(np.uint64)[:, 0] * _GATHER) >> _SHIFT
    table = np.zeros(256, dtype=np.uint8)
    table[packed] = [_bits_of(*row[:6]) for row in features.tolist()]
    table.setflags(write=False)
    return table


_QUALITY_TABLE: Final = _quality_table()


def quality_features(n: int) -> NDArray[np.bool_]:
    """A zeroed ``(n, 8)`` bool array for :func:`quality_bits`."""
    return np.zeros((n, 8), dtype=np.bool_)


def leg_quality(
    present: NDArray[np.bool_],
    bid: FloatArray,
    ask: FloatArray,
    price: FloatArray,
    iv_ok: NDArray[np.bool_],
) -> NDArray[np.uint8]:
    """:class:`LegQuality` bits per leg. ``price`` is the price fed to the IV solver
    (NaN when none); ``iv_ok`` whether the solver returned a volatility."""
    features = quality_features(np.shape(present)[0])
    with np.errstate(invalid="ignore"):
        np.greater(bid, 0.0, out=features[:, 0])
        np.greater(ask, 0.0, out=features[:, 1])
        np.greater(bid, ask, out=features[:, 2])
    features[:, 3] = np.isfinite(price)  # not out=: wrong into strided views (numpy 2.4)
    features[:, 4] = iv_ok
    features[:, 5] = present
    return quality_bits(features)


def quality_bits(features: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """:class:`LegQuality` bits from an ``(n, 8)`` bool array (see :func:`quality_features`)
    whose columns are bid > 0, ask > 0, bid > ask, finite price, IV solved, present (the
    last two unused): the eight bytes of a row read as one integer, its bits gathered
    into a byte, one table lookup."""
    packed = (features.view(np.uint64)[:, 0] * _GATHER) >> _SHIFT
    result: NDArray[np.uint8] = _QUALITY_TABLE.take(packed)
    return result


def chain_flags(
    *,
    spot: float,
    t: float,
    leg_bits: NDArray[np.uint8],
    oi: FloatArray,
    prev_oi: FloatArray,
    volume: FloatArray,
    present: NDArray[np.bool_],
    forward_missing: bool = False,
) -> tuple[str, ...]:
    """Chain-level flag names from the per-leg bits and a few chain facts.

    ``stale_oi``: every present leg's OI equals its previous OI although some leg traded
    (the OI feed has not updated since the previous session/snapshot).
    """
    any_bits = int(np.bitwise_or.reduce(leg_bits)) if leg_bits.size else 0
    flags: list[str] = []
    if not (math.isfinite(spot) and spot > 0.0):
        flags.append("zero_spot")
    if not (t > 0.0):
        flags.append("expired")
    if any_bits:
        flags.extend(name for bit, name in _BIT_FLAGS if any_bits & bit)
    traded = volume > 0.0  # comparisons with NaN are False, no warning
    traded &= present
    if _count_nonzero(traded):
        changed = oi != prev_oi
        changed &= present
        if not _count_nonzero(changed):
            flags.append("stale_oi")
    if forward_missing:
        flags.append("no_forward")
    return tuple(flags)


_BIT_FLAGS: Final = (
    (int(LegQuality.MISSING), "missing_legs"),
    (int(LegQuality.ONE_SIDED), "one_sided_legs"),
    (int(LegQuality.CROSSED), "crossed_quotes"),
    (int(LegQuality.ZERO_QUOTES), "zero_quotes"),
    (int(LegQuality.IV_UNSOLVABLE), "iv_unsolvable"),
)
