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
    *values, live = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (price, prev_price, oi, prev_oi)),
        np.asarray(present, dtype=np.bool_),
    )
    shape = live.shape
    block = np.stack([v.reshape(-1) for v in values])
    with np.errstate(all="ignore"):
        code = buildup_codes(block, live.reshape(-1), (price_band, oi_band), (price_tick, oi_min))
    return code.reshape(shape)


def buildup_codes(
    block: NDArray[np.float64],
    present: NDArray[np.bool_],
    bands: tuple[float, float],
    floors: tuple[float, float],
) -> NDArray[np.int8]:
    """:func:`classify_buildup` on a ``(4, n)`` float64 block of rows price, previous
    price, OI, previous OI (``bands``/``floors`` = ``(price_band, oi_band)``/``(price_tick,
    oi_min)``), one contiguous row at a time (cheaper than strided 2-d operations at
    chain sizes). Call under ``np.errstate(all="ignore")``."""
    price, prev_price, oi, prev_oi = block[0], block[1], block[2], block[3]
    falls = []
    moved = None
    for now, before, scale, floor in ((price, prev_price, bands[0], floors[0]), (oi, prev_oi, bands[1], floors[1])):
        change = np.subtract(now, before)
        band = np.abs(before)
        np.multiply(band, np.array(scale), band)
        np.maximum(band, np.array(floor), out=band)
        up = change > band
        np.negative(band, band)
        down = change < band
        up |= down  # moved beyond the dead-band
        moved = up if moved is None else np.logical_and(moved, up, moved)
        falls.append(down.view(np.int8))
    # code = 1 + (price down) + 2·(OI down) on the four quadrants, 0 inside a band
    code = np.left_shift(falls[1], 1)
    code |= falls[0]
    code += 1
    code *= moved
    usable = price > _ZERO
    usable &= prev_price > _ZERO
    usable &= present
    total = np.add(price, prev_price)  # price + previous price + OI + previous OI
    total += oi
    total += prev_oi
    usable &= np.isfinite(total)
    np.logical_not(usable, usable)
    code[usable] = BuildUp.NO_DATA
    result: NDArray[np.int8] = code
    return result


_ZERO = np.array(0.0)
