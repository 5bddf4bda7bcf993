"""Open-interest build-up classification of each leg versus the previous snapshot.

=====================  ====  ===========  ==========
code                   int   price        open interest
=====================  ====  ===========  ==========
``NO_DATA``            -1    missing leg or no previous value
``NEUTRAL``             0    inside a dead-band (either unchanged)
``LONG_BUILDUP``        1    up           up
``SHORT_BUILDUP``       2    down         up
``SHORT_COVERING``      3    up           down
``LONG_UNWINDING``      4    down         down
=====================  ====  ===========  ==========

Dead-bands: a price change counts only beyond ``max(price_band·|previous|, price_tick)``,
an OI change only beyond ``max(oi_band·previous_oi, oi_min)``.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray


class BuildUp(IntEnum):
    """Per-leg build-up codes (stored as ``int8``)."""

    NO_DATA = -1
    NEUTRAL = 0
    LONG_BUILDUP = 1
    SHORT_BUILDUP = 2
    SHORT_COVERING = 3
    LONG_UNWINDING = 4


def classify_buildup(
    price: npt.ArrayLike,
    prev_price: npt.ArrayLike,
    oi: npt.ArrayLike,
    prev_oi: npt.ArrayLike,
    *,
    present: npt.ArrayLike = True,
    price_band: float = 0.001,
    price_tick: float = 0.05,
    oi_band: float = 0.001,
    oi_min: float = 0.0,
) -> NDArray[np.int8]:
    """:class:`BuildUp` code per leg (``int8``); broadcasts. Never raises: rows with a missing
    leg, a non-positive/non-finite price or previous price, or non-finite OI get ``NO_DATA``."""
    p = np.asarray(price, dtype=np.float64)
    p0 = np.asarray(prev_price, dtype=np.float64)
    o = np.asarray(oi, dtype=np.float64)
    o0 = np.asarray(prev_oi, dtype=np.float64)
    with np.errstate(all="ignore"):
        dp = p - p0
        do = o - o0
        band_p = np.maximum(price_band * np.abs(p0), price_tick)
        band_o = np.maximum(oi_band * np.abs(o0), oi_min)
        up = dp > band_p
        down = dp < -band_p
        oi_up = do > band_o
        oi_down = do < -band_o
        # code = 1 + (price down) + 2·(oi down) on the four quadrants, 0 inside a band
        moved = (up | down) & (oi_up | oi_down)
        code = np.where(moved, 1 + down.astype(np.int8) + 2 * oi_down.astype(np.int8), 0)
        usable = np.asarray(present, dtype=np.bool_) & (p > 0.0) & (p0 > 0.0) & np.isfinite(p + p0 + o + o0)
        code = np.where(usable, code, BuildUp.NO_DATA)
    result: NDArray[np.int8] = np.asarray(code, dtype=np.int8)
    return result
