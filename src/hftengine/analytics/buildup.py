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

import functools
from enum import IntEnum
from typing import Final

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
    price_, prev_price_, oi_, prev_oi_ = (v.reshape(-1) for v in values)
    block = np.stack([price_, oi_, prev_price_, prev_oi_])
    with np.errstate(all="ignore"):
        code = buildup_codes(block, live.reshape(-1), (price_band, oi_band), (price_tick, oi_min))
    return code.reshape(shape)


def buildup_codes(
    block: NDArray[np.float64],
    present: NDArray[np.bool_],
    bands: tuple[float, float],
    floors: tuple[float, float],
) -> NDArray[np.int8]:
    """:func:`classify_buildup` on a ``(4, n)`` float64 block of rows price, OI, previous
    price, previous OI (``bands``/``floors`` = ``(price_band, oi_band)``/``(price_tick,
    oi_min)``). Call under ``np.errstate(all="ignore")``.

    Price and OI are compared side by side as the contiguous ``(2, n)`` halves of the
    block; each leg's two moves (0 none, 1 up, 2 down) become the two bytes of one
    ``uint16`` (a transposed copy viewed as 16-bit), mapped to the code by one table
    lookup; unusable legs become ``NO_DATA`` in one ``np.where``.
    """
    n = block.shape[1]
    now, before = block[:2], block[2:]
    change = np.subtract(now, before)
    band = np.abs(before)
    scale, floor, no_data = _constants(n, bands, floors)
    np.multiply(band, scale, band)
    np.maximum(band, floor, out=band)  # max(band·|before|, floor)
    moves = np.greater(change, band).view(np.uint8)  # up
    np.negative(band, band)
    down = np.less(change, band).view(np.uint8)
    moves += down
    moves += down  # 0 unchanged, 1 up, 2 down, 3 both (a negative band: down, as before)
    packed = moves.T.copy().view(np.uint16)  # price move | OI move << 8, shape (n, 1)
    code = _CODES.take(packed.reshape(n))
    price, prev_price = block[0], block[2]
    usable = np.minimum(price, prev_price) > _ZERO  # both prices positive (NaN: not)
    total = np.add(price, prev_price)  # price + previous price + OI + previous OI
    total += block[1]
    total += block[3]
    usable &= np.isfinite(total)
    usable &= present
    result: NDArray[np.int8] = np.where(usable, code, no_data)
    return result


def _code(price_move: int, oi_move: int) -> int:
    """The code of one leg from its price and OI moves (0 none, 1 up, 2 down, 3 both: down)."""
    if not (price_move and oi_move):
        return int(BuildUp.NEUTRAL)
    return 1 + (price_move >= 2) + 2 * (oi_move >= 2)


def _code_table() -> NDArray[np.int8]:
    """Code by the ``uint16`` whose two bytes are the price move and the OI move."""
    table = np.zeros(1 << 16, dtype=np.int8)
    for price_move in range(4):
        for oi_move in range(4):
            index = np.frombuffer(bytes((price_move, oi_move)), dtype=np.uint16)[0]
            table[index] = _code(price_move, oi_move)
    return table


_CODES: Final = _code_table()
_CODES.setflags(write=False)
_ZERO: Final = np.array(0.0)


@functools.lru_cache(maxsize=16)
def _constants(
    n: int, bands: tuple[float, float], floors: tuple[float, float]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int8]]:
    """Read-only ``(2, n)`` rows of the relative bands and of the floors (price, OI), and
    ``n`` ``NO_DATA`` codes: full arrays, not ``(2, 1)`` columns or scalars, which numpy
    broadcasts several times slower."""
    scale = np.repeat(np.array(bands, dtype=np.float64)[:, None], n, axis=1)
    floor = np.repeat(np.array(floors, dtype=np.float64)[:, None], n, axis=1)
    no_data = np.full(n, BuildUp.NO_DATA, dtype=np.int8)
    for arr in (scale, floor, no_data):
        arr.setflags(write=False)
    return scale, floor, no_data
