"""Smart-money flow: legs whose traded premium or volume-to-open-interest ratio stands out
within one chain snapshot.

Per leg (both sides of the chain together form the population):

- traded premium ``P = volume · price`` (currency; volume in the OI unit of the chain,
  converted to shares like the OI);
- turnover ``R = volume / OI`` (``inf`` for volume on zero OI);
- robust z-scores of ``ln(1 + P)`` and ``ln(1 + R)`` over the legs that traded:
  ``z = (v − median) / (IQR / 1.349)`` (order statistics, one partial sort);
- ``score = max(z_P, z_R)`` (0 for legs without volume, NaN for missing legs);
- flags (bit set, :class:`FlowFlag`): ``LARGE_PREMIUM`` when ``z_P >= zscore`` and
  ``P >= min_premium``; ``VOLUME_OI`` when ``z_R >= zscore`` and ``R >= volume_oi_ratio``.
"""

from __future__ import annotations

from enum import IntFlag

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from hftengine.analytics.normalized_black import FloatArray

_IQR_TO_SIGMA = 1.349


class FlowFlag(IntFlag):
    """Bits of the per-leg flow flags (``uint8``)."""

    NONE = 0
    LARGE_PREMIUM = 1
    VOLUME_OI = 2


def robust_zscore(values: FloatArray, mask: NDArray[np.bool_]) -> FloatArray:
    """``(v − median)/(IQR/1.349)`` using the rows in ``mask`` (order statistics ``m//4``,
    ``m//2``, ``3m//4`` of the ``m`` sample rows); 0 where fewer than 4 rows qualify; NaN
    outside ``mask``. With a zero spread (most rows identical) any deviation is ±inf."""
    out = np.full(values.shape, np.nan)
    sample = values[mask]
    m = sample.size
    if m < 4:
        out[mask] = 0.0
        return out
    lo, mid, hi = m // 4, m // 2, (3 * m) // 4
    part = np.sort(sample)  # a full sort of a few hundred values beats a 3-point partition
    scale = (part[hi] - part[lo]) / _IQR_TO_SIGMA
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (sample - part[mid]) / scale if scale > 0.0 else np.sign(sample - part[mid]) * np.inf
    out[mask] = np.where(sample == part[mid], 0.0, z)
    return out


def flow_scores(
    volume_shares: npt.ArrayLike,
    oi_shares: npt.ArrayLike,
    price: npt.ArrayLike,
    present: npt.ArrayLike,
    *,
    zscore: float = 3.0,
    min_premium: float = 1.0e6,
    volume_oi_ratio: float = 1.0,
) -> tuple[FloatArray, NDArray[np.uint8], FloatArray]:
    """``(score, flags, premium)`` per leg (1-d inputs of equal length). Never raises."""
    vol = np.asarray(volume_shares, dtype=np.float64)
    oi = np.asarray(oi_shares, dtype=np.float64)
    px = np.asarray(price, dtype=np.float64)
    live = np.asarray(present, dtype=np.bool_) & np.isfinite(vol) & np.isfinite(px)
    with np.errstate(all="ignore"):
        premium = np.where(live & (vol > 0.0) & (px > 0.0), vol * px, 0.0)
        turnover = np.where(oi > 0.0, vol / oi, np.inf)
        traded = live & (vol > 0.0) & (px > 0.0)
        z_prem = robust_zscore(np.log1p(premium), traded)
        log_turn = np.log1p(np.where(np.isfinite(turnover), turnover, 0.0))
        z_turn = robust_zscore(log_turn, traded & np.isfinite(turnover))
        z_turn = np.where(traded & ~np.isfinite(turnover), np.inf, z_turn)
        score = np.fmax(z_prem, z_turn)
        score = np.where(live & ~traded, 0.0, score)
        score = np.where(live, score, np.nan)
        large = traded & (z_prem >= zscore) & (premium >= min_premium)
        unusual = traded & (z_turn >= zscore) & (turnover >= volume_oi_ratio)
    flags = (large * np.uint8(FlowFlag.LARGE_PREMIUM) | unusual * np.uint8(FlowFlag.VOLUME_OI)).astype(np.uint8)
    premium_out: FloatArray = np.where(live, premium, np.nan)
    return score, flags, premium_out
