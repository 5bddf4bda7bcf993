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

import functools
import math
from enum import IntFlag

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from hftengine.analytics.normalized_black import FloatArray, _count_nonzero

_IQR_TO_SIGMA = 1.349


class FlowFlag(IntFlag):
    """Bits of the per-leg flow flags (``uint8``)."""

    NONE = 0
    LARGE_PREMIUM = 1
    VOLUME_OI = 2


def _robust_z(sample: FloatArray) -> FloatArray:
    """Robust z-scores of a 1-d sample (see :func:`robust_zscore`)."""
    m = sample.size
    if m < 4:
        return np.zeros(m)
    lo, mid, hi = m // 4, m // 2, (3 * m) // 4
    part = np.sort(sample)  # a full sort of a few hundred values beats a 3-point partition
    scale = (part[hi] - part[lo]) / _IQR_TO_SIGMA
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (sample - part[mid]) / scale if scale > 0.0 else np.sign(sample - part[mid]) * np.inf
    result: FloatArray = np.where(sample == part[mid], 0.0, z)
    return result


def robust_zscore(values: FloatArray, mask: NDArray[np.bool_]) -> FloatArray:
    """``(v − median)/(IQR/1.349)`` using the rows in ``mask`` (order statistics ``m//4``,
    ``m//2``, ``3m//4`` of the ``m`` sample rows); 0 where fewer than 4 rows qualify; NaN
    outside ``mask``. With a zero spread (most rows identical) any deviation is ±inf."""
    out = np.full(values.shape, np.nan)
    out[mask] = _robust_z(values[mask])
    return out


def _robust_z_pair(samples: FloatArray) -> FloatArray:
    """:func:`_robust_z` of both rows of a ``(2, m)`` array with one sort (and the six
    order statistics in one gather)."""
    m = samples.shape[1]
    if m < 4:
        return np.zeros((2, m))
    ordered = np.sort(samples, axis=1)
    (q1, med, q3), (q1_t, med_t, q3_t) = ordered.take((m // 4, m // 2, (3 * m) // 4), 1).tolist()
    z = np.empty((2, m))
    for sample, row, lo, mid, hi in ((samples[0], z[0], q1, med, q3), (samples[1], z[1], q1_t, med_t, q3_t)):
        scale = (hi - lo) / _IQR_TO_SIGMA
        if not scale > 0.0:
            row[:] = _robust_z(sample)
            continue
        np.subtract(sample, mid, row)
        np.divide(row, scale, row)
        if not math.isfinite(mid):  # finite: (v − med) is exactly 0 where v == med already
            row[sample == mid] = 0.0
    return z


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
        traded = live & (vol > 0.0) & (px > 0.0)
        return _flow_scores(np.stack((oi, vol)), px, live, traded, zscore, min_premium, volume_oi_ratio)


@functools.lru_cache(maxsize=16)
def _base_values(n: int) -> tuple[FloatArray, FloatArray]:
    """Read-only ``(zeros, NaNs)`` of length ``n``: the live-without-volume and missing scores."""
    zeros, nans = np.zeros(n), np.full(n, np.nan)
    zeros.setflags(write=False)
    nans.setflags(write=False)
    return zeros, nans


def _flow_scores(
    oi_vol: FloatArray,
    px: FloatArray,
    live: NDArray[np.bool_],
    traded: NDArray[np.bool_],
    zscore: float,
    min_premium: float,
    volume_oi_ratio: float,
) -> tuple[FloatArray, NDArray[np.uint8], FloatArray]:
    """:func:`flow_scores` on float64 arrays, ``oi_vol`` the ``(2, N)`` rows OI and volume
    (in shares), ``live`` = present with finite volume and price, ``traded`` = live with
    volume > 0 and price > 0; call under ``np.errstate(all="ignore")``. Only the rows that
    traded are scored: OI and volume taken in one gather, premium and turnover side by
    side in a ``(2, m)`` array, one log and one sort for both."""
    rows = traded.nonzero()[0]
    m = rows.shape[0]
    premium = np.where(live, *_base_values(live.shape[0]))  # live legs without volume 0, missing NaN
    score = premium.copy()
    flags = np.zeros(live.shape[0], dtype=np.uint8)
    if not m:
        return score, flags, premium
    taken = oi_vol.take(rows, 1, None, "clip")
    o, v = taken[0], taken[1]  # not `= taken`: unpacking ends with a formatted IndexError
    prem_turn = np.empty((2, m))
    prem, turn = prem_turn[0], prem_turn[1]
    np.multiply(v, px.take(rows), prem)  # P = volume·price
    np.divide(v, o, turn)  # R = volume/OI, inf without OI
    has_oi = o > _ZERO
    if _count_nonzero(has_oi) != m:
        turn[~has_oi] = np.inf
    logs = np.log1p(prem_turn)
    finite_turn = np.isfinite(turn)
    if _count_nonzero(finite_turn) == m:
        z = _robust_z_pair(logs)
    else:  # turnover without OI: +inf, the others scored among themselves
        z = np.empty((2, m))
        z[0] = _robust_z(logs[0])
        z[1] = np.inf
        z[1, finite_turn] = _robust_z(logs[1, finite_turn])
    score[rows] = np.fmax(z[0], z[1])
    premium[rows] = prem
    hit = z >= zscore
    if _count_nonzero(hit):
        large, unusual = hit[0], hit[1]
        large &= prem >= min_premium
        unusual &= turn >= volume_oi_ratio
        bits = np.left_shift(unusual.view(np.uint8), 1)
        bits |= large.view(np.uint8)  # LARGE_PREMIUM | VOLUME_OI
        flags[rows] = bits
    return score, flags, premium


_ZERO = np.array(0.0)
