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

from hftengine.analytics.normalized_black import FloatArray

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


def leg_quality(
    present: NDArray[np.bool_],
    bid: FloatArray,
    ask: FloatArray,
    price: FloatArray,
    iv_ok: NDArray[np.bool_],
) -> NDArray[np.uint8]:
    """:class:`LegQuality` bits per leg. ``price`` is the price fed to the IV solver
    (NaN when none); ``iv_ok`` whether the solver returned a volatility."""
    with np.errstate(invalid="ignore"):
        has_bid = bid > 0.0
        has_ask = ask > 0.0
    missing = ~present
    bits = missing * np.uint8(LegQuality.MISSING)
    bits |= (present & (has_bid ^ has_ask)) * np.uint8(LegQuality.ONE_SIDED)
    bits |= (present & has_bid & has_ask & (bid > ask)) * np.uint8(LegQuality.CROSSED)
    bits |= (present & ~has_bid & ~has_ask) * np.uint8(LegQuality.ZERO_QUOTES)
    priced = present & np.isfinite(price)
    bits |= (priced & ~iv_ok) * np.uint8(LegQuality.IV_UNSOLVABLE)
    bits |= (present & ~priced) * np.uint8(LegQuality.NO_PRICE)
    result: NDArray[np.uint8] = bits.astype(np.uint8)
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
    names = (
        (LegQuality.MISSING, "missing_legs"),
        (LegQuality.ONE_SIDED, "one_sided_legs"),
        (LegQuality.CROSSED, "crossed_quotes"),
        (LegQuality.ZERO_QUOTES, "zero_quotes"),
        (LegQuality.IV_UNSOLVABLE, "iv_unsolvable"),
    )
    flags.extend(name for bit, name in names if any_bits & bit)
    if present.any():
        with np.errstate(invalid="ignore"):
            traded = bool(np.any(volume[present] > 0.0))
            unchanged = bool(np.all(oi[present] == prev_oi[present]))
        if traded and unchanged:
            flags.append("stale_oi")
    if forward_missing:
        flags.append("no_forward")
    return tuple(flags)
